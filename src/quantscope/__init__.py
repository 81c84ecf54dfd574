"""quantscope: choose and verify quantized reasoning LLMs for limited GPU memory.

The front door: the library verbs of each stage, loaded on first use (so `import quantscope`
and `quantscope --help` import no torch)::

    import quantscope as qs

    anatomy = qs.load_anatomy("Qwen/Qwen3.5-27B")             # inspect (headers only)
    print(qs.read_contents(anatomy).summary())                 # its label against its contents
    footprint = qs.predict_footprint(anatomy, qs.load_recipe("w4a16-safe"))   # plan
    qs.quantize_model(model, "w4a16-safe", "out/", qs.QuantizeOptions(dataset="calib.jsonl"))
    with qs.Store.open("project") as store:                    # eval -> the results store
        qs.run_eval(qs.load_spec(overrides={"model": "out/", "tasks": ["aime25"]}), store)
        analysis = qs.analyze(store)                            # compare with the baseline
    qs.recommend(analysis, budget_bytes=24 * 10**9)

The stages, one module or package each: anatomy -> formats / recipe (footprint) -> quantize ->
engines / tasks / runner / store (eval) -> analysis / report (recommend) -> profile; `demo`
runs them all on the bundled toy model. ARCHITECTURE.md maps every module.
"""

from quantscope.errors import QuantscopeError
from quantscope.util import lazy_attributes

__version__ = "0.1.0"

_EXPORTS = {
    "load_anatomy": "quantscope.checkpoint.load:load_anatomy",
    "read_contents": "quantscope.checkpoint.contents:read_contents",
    "derive_recipe": "quantscope.plan.derive:derive_recipe",
    "plan_like": "quantscope.plan.derive:plan_like",
    "Recipe": "quantscope.plan.recipe:Recipe",
    "load_recipe": "quantscope.plan.recipe:load_recipe",
    "predict_footprint": "quantscope.plan.recipe:predict_footprint",
    "plan_recipes": "quantscope.plan.recipe:plan_recipes",
    "ServingOptions": "quantscope.plan.serving:ServingOptions",
    "cache_shape": "quantscope.plan.serving:cache_shape",
    "cache_layout": "quantscope.plan.serving:cache_layout",
    "serve_recipes": "quantscope.plan.serving:serve_recipes",
    "GpuBudget": "quantscope.plan.serving:GpuBudget",
    "load_causal_lm": "quantscope.checkpoint.modeling:load_causal_lm",
    "QuantizeOptions": "quantscope.quantize.pipeline:QuantizeOptions",
    # `quantize_model`, not `quantize`: importing the `quantscope.quantize` package binds that name.
    "quantize_model": "quantscope.quantize.pipeline:quantize",
    "verify": "quantscope.quantize.verify:verify",
    "RunSpec": "quantscope.evaluate.spec:RunSpec",
    "load_spec": "quantscope.evaluate.spec:load_spec",
    "run_eval": "quantscope.evaluate.runner:run_eval",
    "Store": "quantscope.store.database:Store",
    "analyze": "quantscope.analysis.compare:analyze",
    "recommend": "quantscope.analysis.recommend:recommend",
    "build_report": "quantscope.report.build:build_report",
    "ProfileOptions": "quantscope.sensitivity.profiler:ProfileOptions",
    "profile_model": "quantscope.sensitivity.profiler:profile_model",
    "run_profile": "quantscope.sensitivity.profiler:run_profile",
    "search_recipe": "quantscope.sensitivity.search:search_recipe",
    "run_demo": "quantscope.demo:run_demo",
}

__all__ = ["QuantscopeError", "__version__", *sorted(_EXPORTS)]
__getattr__ = lazy_attributes(__name__, _EXPORTS)
