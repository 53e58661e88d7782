"""The worker: claims due messages, sends them, schedules retries, promotes and reaps."""
