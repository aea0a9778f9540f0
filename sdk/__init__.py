"""Client SDK for the alliance exchange; `sdk.signing` is the canonicaliser the server shares."""
