"""What a device event becomes: the documented policy table (pure).

| event           | becomes            | why                                                                  |
|-----------------|--------------------|----------------------------------------------------------------------|
| strap_opened    | violation          | the bracelet strap was cut or opened: tampering                      |
| case_opened     | violation          | the bracelet or home unit case was opened: tampering                 |
| power_lost      | technical alert    | a home unit on battery or a power cut is not the person's fault      |
| out_of_range    | technical alert    | radio range also drops for technical reasons; a zone violation from  |
|                 |                    | GNSS positions is what proves the person left (never FAIL on doubt)  |
| low_battery     | technical alert    | the person must charge the device; an officer follows it up          |
| device_fault    | technical alert    | the equipment reports a fault                                        |
| strap_closed, case_closed, power_restored, back_in_range, heartbeat | stored only | the end of an earlier |
|                 |                    | condition or a sign of life; no alert                                |

Technical failure never becomes a violation (the service's rule for checks, kept for devices).
"""

from __future__ import annotations

from dataclasses import dataclass

from media_server.db.enums import AlertKind, DeviceEventType


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """What one event type raises (None: stored only) and the alert's message."""

    alert: AlertKind | None
    message: str


POLICY: dict[DeviceEventType, EventPolicy] = {
    DeviceEventType.STRAP_OPENED: EventPolicy(AlertKind.VIOLATION, "The bracelet strap was opened (tamper)."),
    DeviceEventType.CASE_OPENED: EventPolicy(AlertKind.VIOLATION, "A device case was opened (tamper)."),
    DeviceEventType.POWER_LOST: EventPolicy(AlertKind.TECHNICAL, "The home unit lost mains power."),
    DeviceEventType.OUT_OF_RANGE: EventPolicy(
        AlertKind.TECHNICAL, "The bracelet is out of range of its home unit; check the positions."
    ),
    DeviceEventType.LOW_BATTERY: EventPolicy(AlertKind.TECHNICAL, "The device battery is low."),
    DeviceEventType.DEVICE_FAULT: EventPolicy(AlertKind.TECHNICAL, "The device reports a fault."),
    DeviceEventType.STRAP_CLOSED: EventPolicy(None, "The bracelet strap is closed."),
    DeviceEventType.CASE_CLOSED: EventPolicy(None, "The device case is closed."),
    DeviceEventType.POWER_RESTORED: EventPolicy(None, "Mains power is back."),
    DeviceEventType.BACK_IN_RANGE: EventPolicy(None, "The bracelet is back in range."),
    DeviceEventType.HEARTBEAT: EventPolicy(None, "The device is alive."),
}


def policy_for(event: DeviceEventType) -> EventPolicy:
    """The policy row of `event` (every member has one; a test checks it)."""
    return POLICY[event]
