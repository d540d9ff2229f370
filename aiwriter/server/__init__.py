"""The web writer: `aiwriter serve` runs a local FastAPI server with the writing page at /, the
OpenAI-compatible and KoboldAI APIs, and manuscripts kept in SQLite (aiwriter.store).

    app.py              create_app(settings): routes, error handling, the guard (loopback, API key, CORS)
    connections.py      uvicorn's configuration: header timeout, capped connections, small stream buffers
    scheduler.py        the one thread that owns the model: its loop ties the four below together
    job_queue.py        JobQueue: admission (400/429/503), waiting FIFO, running jobs, abort, find
    model_slot.py       ModelSlot: the model in memory, its writer and caches, switching, start states
    openings.py         Openings: prompts read chunk by chunk, shortest first; a job's streams
    turns.py            Turns: slow readers paused/resumed/stopped, long jobs taking turns for room
    jobs.py             Job: one request's opening and continuations, its events to the event loop
    catalog.py          ModelCatalog: the model names a request may give
    stats.py            the scheduler's counters (/api/status)
    replies.py          ApiError (status + bilingual message naming the field), safe JSON out
    bodies.py           reading a JSON body: type, size limit, timeout, a few large ones at once
    fields.py           Fields: typed field checks
    sampling_fields.py  the sampling fields of a completion request
    job_response.py     Render, JobResponse (SSE or one JSON body), submit
    openai_api.py / kobold_api.py / documents.py   the endpoints

The step loop itself (sample, feed, one batched forward) is writer.Batch, shared with `aiwriter write`.
"""
