"""The results store: `rows` (the records a run writes), `database` (the SQLite file, the only
module that speaks SQL) and `settings` (what a generation depends on, recorded with every run and
compared before a resume or a comparison).
"""
