"""The web writer: `aiwriter serve` runs a local FastAPI server with the writing page at /, the
OpenAI-compatible and KoboldAI APIs, and manuscripts kept in SQLite (aiwriter.store).

    app.py        create_app(settings): routes, error handling, the guard (loopback, API key, CORS)
    scheduler.py  the one thread that owns the model and steps every request in one batch
    common.py     JSON bodies, field checks, safe errors, streaming a job to the client
    openai_api.py / kobold_api.py / documents.py   the endpoints
    command.py    the `aiwriter serve` command
"""
