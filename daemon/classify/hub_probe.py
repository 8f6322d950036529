"""Is the Hugging Face hub reachable right now? One short request, before any download."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import huggingface_hub

# A station is offline by nature: answer in about this long rather than after the library's
# five retries with back-off (about 30 s of warnings).
PROBE_TIMEOUT_SECONDS = 1.5


def hub_endpoint() -> str:
    """The hub the libraries would use ($HF_ENDPOINT, read by huggingface_hub at import)."""
    return str(huggingface_hub.constants.ENDPOINT).rstrip("/")


def hub_unreachable_reason(timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when the hub answers (any HTTP status counts); else why not, in a few words.

    urllib honours $HTTPS_PROXY/$NO_PROXY as the hub client does, so a proxied station probes
    through its proxy. urllib's timeout does not cover the name lookup, which on a dead link
    waits for the resolver's own retries (10 s and more): the probe runs in a thread and is
    given up at the deadline instead."""
    answers: list[str | None] = []
    probe = threading.Thread(
        target=lambda: answers.append(_probe(timeout)), name="hub-probe", daemon=True
    )
    probe.start()
    probe.join(timeout)
    if answers:
        return answers[0]
    return f"{hub_endpoint()} did not answer within {timeout:g} s (no name lookup or reply)"


def _probe(timeout: float) -> str | None:
    request = urllib.request.Request(f"{hub_endpoint()}/api/whoami-v2", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:  # 401 without a token: the hub is there
        return None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{hub_endpoint()} did not answer within {timeout:g} s ({reason})"
