"""luminai-actors: AI sales agents (SDRs) that hold WhatsApp conversations through Evolution API.

A webhook from Evolution API reaches the Starlette app (`web/`), which hands it to the pykka actor owning that
conversation (`actors/conversation.py`); the actor records it through plain service functions (`services/`)
and Dramatiq actors run the AI turn and the send (`actors/ai.py`, `actors/sender.py`). `bootstrap.py` wires it
all together from `config.Settings`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
