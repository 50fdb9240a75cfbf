"""The course's OpenAI-compatible server, one concern per module (`python -m helpers.serve` runs it; `helpers.serve`
re-exports the names lessons use):

    protocol   OpenAI's request and response bodies, bounded parsing, errors in OpenAI's format
    served     the model being served (base, merged, or base + LoRA adapter), its names, its prompt limits
    batching   the KV cache as fixed slots, and one decoding step for all of them (answers independent of traffic)
    sequence   one request being generated: its sampling, its own random generator, its stops, its text so far
    scheduler  continuous batching: the model's thread, the bounded queue, admission, cancellation, /health figures
    app        the FastAPI application: routes, API key, body limit, streaming
    process    ports, start_server / ServerProcess, clean stops
    load_test  the load-test client (latency, time to first token, inter-token latency, tokens/s)
"""
