"""Is this person sober: reading validation, retest state machine, breath-photo validation.

May import `identity`; never the service.
"""
