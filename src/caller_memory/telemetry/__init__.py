"""What memory does in production, where LiveKit users already look.

- `caller_memory.telemetry.metrics`: Prometheus instruments (`caller_memory_*`) on
  prometheus_client's default registry, as LiveKit's own (`lk_agents_*`) are: the worker's
  metrics endpoint (`WorkerOptions(prometheus_port=...)`) serves them, and with
  `PROMETHEUS_MULTIPROC_DIR` (or `prometheus_multiproc_dir=`) it serves what every job process
  counted too.
- `caller_memory.telemetry.tracing`: OpenTelemetry spans (`caller_memory.recall`,
  `.capture`, `.extraction`, `.embedding`) made with LiveKit's own tracer, so they go to the
  tracer provider LiveKit was given (`livekit.agents.telemetry.set_tracer_provider`) and nest
  in its turn spans.

Neither ever carries an identity, a uuid or what a caller said: labels and attributes hold
counts, durations, and values from small fixed sets.
"""
