"""Breath tests from home stations: evidence first, admission, reading policy, photos, retests, verdict.

`submit_breath_test` is the whole flow behind `POST /api/v1/breath-tests` (the router only bounds and
parses the upload and maps the outcome to HTTP):

1. Evidence first. The device serial is read leniently from the reading to find the station and its
   person. When both are known, a breath `CheckSession` is opened (or the person's open scheduled breath
   session is claimed) and the reading, its signature and every photo are stored with artifact rows
   (`media_server.artifacts.store_artifact`, module `evidence`). When they are not, the bytes are still stored (content-addressed) and an
   audit entry `breath_rejected` lists their keys and sha256: nothing received is lost.
2. Admission (`sobriety.reading.admit_submission`) on the devices table and the nonce ledger, then
   `validate_reading` (module `flow`, adapters in `adapters`). A rejection is recorded as check results and a verdict on the session, and audited.
3. An admitted reading is judged against the person's order limit at the stage the retest episode
   expects; the photos are analysed in the worker pool against the enrolled face template and judged
   against the fingerprints of every earlier breath photo (module `photos`); the episode moves on (module
   `episodes`); `media_server.verdict.write_verdict` signs the manifest and writes the verdict; webhooks
   announce it. The episode clock (module `clock`) books missed and unconfirmed retests.

Policy choices made here (documented in the API too):

* A reading is judged against the person's court-order limit (`PUT /api/v1/persons/{id}/order`), or
  `sobriety.default_limit_g_210l` where the order sets none.
* A forged signature, a replayed nonce or a malformed reading is recorded with its integrity FAIL turned
  into INCONCLUSIVE (`details["integrity_violation"] = True`), so the verdict is REVIEW, not FAIL: a
  forgery or replay may come from someone other than the person (or a station retrying a send), and a
  person-level violation needs a human to attribute it.
* A submission claims the person's open scheduled breath session only when its signature verifies and
  its nonce is new (routing only; admission decides); anything else opens an unscheduled session, so a
  replayed reading cannot use up the person's scheduled test.
* A reading whose photos clearly show someone else, or reuse an earlier photo file, is not used by the
  retest episode (a retake is requested); the verdict records the violation.

Never a 500 for what the station sent: engine crashes and undecodable photos are TECHNICAL results.
"""

from media_server.breath.adapters import DbDeviceRegistry, DbNonceLedger, DbPhotoIndex, prune_nonces
from media_server.breath.clock import EpisodeTick, run_episode_clock, tick_episodes
from media_server.breath.episodes import order_limit
from media_server.breath.flow import now_utc, submit_breath_test
from media_server.breath.values import BreathOutcome, Retest, Upload

__all__ = [
    "BreathOutcome",
    "DbDeviceRegistry",
    "DbNonceLedger",
    "DbPhotoIndex",
    "EpisodeTick",
    "Retest",
    "Upload",
    "now_utc",
    "order_limit",
    "prune_nonces",
    "run_episode_clock",
    "submit_breath_test",
    "tick_episodes",
]
