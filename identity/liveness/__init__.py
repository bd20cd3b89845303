"""Active liveness: randomised challenges (head turn, blink, spoken digits) and AV consistency."""
