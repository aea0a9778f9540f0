"""The composition root: the merchant API, settlement endpoints and admin console as one app."""
