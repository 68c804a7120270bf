"""The Starlette app: Evolution webhooks, the admin API, and the ops endpoints."""
