"""The check-in flow: evidence, checks, verdict, then the slow follow-up (adaptive gallery).

- `evidence`: the capture's artifacts, hashed and stored before anything is judged;
- `checks`: face, anti-spoofing, liveness challenge, voice and location in the worker pool;
- `gallery_update`: a confidently passed session refreshes the face template (after the reply);
- `flow`: `finish_session`, the WHIP session's sink, in that order.
"""
