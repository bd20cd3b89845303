"""Is this person sober: reading validation, retest state machine, breath-photo validation.

May import `identity`; never the service. A breath-test endpoint is a thin sequence of calls:

1. store `reading`, `signature` and the photos as evidence (the service's job);
2. `reading.admit_submission(...)` - canonical form, device, Ed25519 signature, freshness, nonce;
3. `reading.validate_reading(...)` - calibration, blow and photo timing, plausibility;
4. `policy.evaluate_reading(...)` with `policy.expected_stage(episode)` and the order's `OrderLimit`;
5. `photos.analyse_breath_photos(...)` in a worker process, then `photos.judge_breath_photos(...)`;
6. `policy.next_state(episode, policy.event_for(check, reading.timestamp), now, settings)` and perform
   the returned actions; the service fuses the checks of one test with its one verdict policy
   (`media_server.verdict.decide`), the same rule every other session is judged by.
"""
