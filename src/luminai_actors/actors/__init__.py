"""Actors: pykka conversation actors (one per conversation) and the Dramatiq AI and sender actors."""
