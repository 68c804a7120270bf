"""The WhatsApp channel through Evolution API: webhook parsing and the HTTP client."""
