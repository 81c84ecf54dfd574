// Draws every figure of the report from the JSON block, then marks the body so that a headless
// browser (and the tests) can tell the plots rendered: data-plots-rendered = number of plots,
// data-errors = any script error seen on the page.
(function () {
  "use strict";
  var errors = [];
  function note(message) {
    errors.push(String(message));
    document.body.setAttribute("data-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (event) { note(event.message); });
  var figures = JSON.parse(document.getElementById("qs-figures").textContent);
  var config = { responsive: true, displaylogo: false };
  var drawn = Object.keys(figures).map(function (id) {
    var element = document.getElementById(id);
    if (!element) {
      note("no element for figure " + id);
      return Promise.resolve();
    }
    return Plotly.newPlot(element, figures[id].data, figures[id].layout, config);
  });
  Promise.all(drawn).then(function () {
    var count = 0;
    document.querySelectorAll(".js-plotly-plot").forEach(function (plot) {
      if (plot.querySelector("svg.main-svg")) { count += 1; }
    });
    document.body.setAttribute("data-plots-rendered", String(count));
  }, note);
})();
