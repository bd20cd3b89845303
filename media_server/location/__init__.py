"""Location monitoring: signed position batches, zones with a jitter rule, device events, alerts.

`zones` and `policy` are pure; `signed` is the wire format and admission; `chain` keeps positions as a
per-person hash chain; `store` is the database side; `flow` ties them together for the API.
"""
