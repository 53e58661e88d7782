"""email_dispatch: how fast emails go out through the ``smtp`` provider, with pooled connections.

A fake SMTP server (``python -m tidings.testing.fake_smtp``, aiosmtpd, no TLS) runs in its own
process. 10,000 emails (``email_messages``; 2,000 with a PDF each, ``email_pdf_messages``, since
making a PDF costs about 50 ms) are accepted as one email batch by ``tidings api``, timed on its
own (``accept_seconds``: rendering, and making the PDFs, happen there). Then one ``tidings
worker`` sends them through the ``smtp`` provider (``pool_size`` 10 connections, ``concurrency``
50). The clock runs from the worker's start until every email is ``sent`` (SMTP has no receipts:
a 250 is final here), read from the database every 0.2 s. Run twice: plain, and with a PDF (one
page, about 40 lines) made for every recipient.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from typing import Any

import aiohttp
import orjson
from harness import BenchError, Workspace, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load

TARGET_PER_S = 1000.0
PDF_TEMPLATE = "<h1>Invoice {{ number }}</h1><p>Patient: {{ first_name }}</p>" + "".join(
    f"<p>Line {i}: consultation and medicine, KES {{{{ number }}}}.{i:02d}</p>" for i in range(40)
)


def email_batch(count: int, group_id: str, pdf: bool) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "group_id": group_id,
        "channel": "email",
        "from": "Bench Clinic <noreply@clinic.example>",
        "subject_template": "Invoice {{ number }} for {{ first_name }}",
        "inner_template": "# Hello {{ first_name }}\n\nYour invoice **{{ number }}** is ready.",
        "recipients": [
            {"to": f"person{i}@example.org", "first_name": f"Person {i}", "context": {"number": i}}
            for i in range(count)
        ],
    }
    if pdf:
        batch.update(pdf_template=PDF_TEMPLATE, pdf_filename="invoice.pdf")
    return batch


async def start_smtp(ws: Workspace) -> int:
    """The fake SMTP server as process ``smtp``; its port."""
    ws.processes.start_python(
        "smtp",
        ["-m", "tidings.testing.fake_smtp", "--port", "0", "--security", "none"],
        dict(os.environ),
    )
    announced = await ws.processes.wait_for_line("smtp", "listening on ")
    return int(announced.rsplit(":", 1)[1].strip().rstrip("/"))


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    smtp_port = await start_smtp(ws)
    port = free_port()
    settings = {
        "default_email_provider": "mail",
        "providers__mail__kind": "smtp",
        "providers__mail__host": "127.0.0.1",
        "providers__mail__port": str(smtp_port),
        "providers__mail__security": "none",
        "providers__mail__from": "Bench Clinic <noreply@clinic.example>",
        "providers__mail__pool_size": "10",
        "providers__mail__concurrency": "50",
        **options.settings,
    }
    env = ws.service_env(api_port=port, settings=settings)
    ws.migrate(env)
    key = ws.create_key(env)
    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    lines = []
    async with aiohttp.ClientSession() as session:
        sent_before = 0
        for pdf in (False, True):
            total = options.email_pdf_messages if pdf else options.email_messages
            body = orjson.dumps(email_batch(total, f"email-{pdf}", pdf))
            started = time.perf_counter()
            async with session.post(
                f"http://127.0.0.1:{port}/v1/batches",
                data=io.BytesIO(body),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=1200),
            ) as response:
                answer = await response.json()
                if response.status != 202 or answer.get("accepted") != total:
                    raise BenchError(
                        f"the email batch was not accepted: {response.status} {str(answer)[:300]}"
                    )
            accept_seconds = time.perf_counter() - started
            worker = f"worker-{'pdf' if pdf else 'plain'}"
            procs.start_tidings(worker, ["worker"], env)
            await procs.wait_for_line(worker, "worker started")
            profiler.attach(worker, "smtp")
            procs.mark_cpu(worker, "smtp")
            began = time.perf_counter()
            wanted = sent_before + total
            while True:
                counts = await counts_by_status(ws.database_url)
                if counts.get("sent", 0) + counts.get("failed", 0) >= wanted:
                    break
                procs.check_alive(worker, "smtp", "api")
                if time.perf_counter() - began > 900:
                    raise BenchError(f"not all emails sent in 15 minutes: {counts}")
                await asyncio.sleep(0.2)
            seconds = time.perf_counter() - began
            cpu = {name: procs.cpu_since_mark(name) for name in (worker, "smtp")}
            rss = procs.peak_rss_mb(worker)
            errors = procs.error_lines(worker)
            procs.stop(worker)
            sent_before = wanted
            lines.append(
                line(
                    "email_dispatch",
                    ws.kind,
                    messages=total,
                    seconds=seconds,
                    peak_rss_mb=rss,
                    pdf=pdf,
                    accept_seconds=round(accept_seconds, 2),
                    accept_per_s=round(total / accept_seconds, 1),
                    statuses=counts,
                    cpu_s=cpu,
                    errors_logged=len(errors),
                    pool_size=10,
                    concurrency=50,
                    target=f">= {TARGET_PER_S:.0f} emails/s sent",
                    met=total / seconds >= TARGET_PER_S and counts.get("failed", 0) == 0,
                    loadavg_1m=load,
                    profiles=profiler.finish(),
                )
            )
    procs.stop("api")
    procs.stop("smtp")
    return lines
