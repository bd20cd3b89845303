"""Who is this: face and voice engines, quality gates, liveness, templates and the check vocabulary.

Pure library: arrays in, results out. No web, database or storage imports here.
"""
