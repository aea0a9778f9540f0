"""Partner merchants: onboarding, Ed25519 keys, liability limits, and the alliance's settings."""
