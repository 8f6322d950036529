"""The text `tigerwatch rescore` prints: transitions of frames and events, what was left out."""

from __future__ import annotations

from daemon.heads import LinearHead
from daemon.staff.rescore import RescorePlan
from daemon.staff.rescore_apply import Applied


def format_report(plan: RescorePlan, head: LinearHead | None, applied: Applied | None) -> str:
    scorer = f"head {head.id}" if head is not None else "zero-shot prompts"
    verb = "changed" if applied else "would change"
    lines = [
        f"rescored {plan.rescored} frames ({scorer}): "
        f"{len(plan.redecided)} decisions {verb}, {plan.changed} frames {verb} folder",
        *(f"  {move}: {count}" for move, count in plan.transitions.items()),
        f"events: {len(plan.events)} {verb}",
        *(f"  {move}: {count}" for move, count in plan.event_transitions.items()),
        f"skipped {plan.judged} frames with a staff verdict (never moved)",
    ]
    if plan.without_embedding:
        lines.append(f"skipped {plan.without_embedding} frames without a stored embedding")
    if plan.other_model:
        lines.append(f"skipped {plan.other_model} frames embedded by another model")
    if plan.unfiled:
        lines.append(f"skipped {plan.unfiled} frames not filed yet (the daemon files them)")
    lines += _applied(applied)
    return "\n".join(lines)


def _applied(applied: Applied | None) -> list[str]:
    if applied is None:
        return ["nothing was changed or moved (rescore --apply records and moves; see README)"]
    lines = [f"moved {applied.moved} frames; new decisions recorded"]
    if applied.settled:
        lines.append(f"finished {applied.settled} moves an earlier run left open")
    if applied.not_where_filed:
        lines.append(
            f"left alone {applied.not_where_filed} frames no longer where tigerwatch filed them "
            "(moved or replaced by staff; see the refiles table)"
        )
    if applied.failed:
        lines.append(
            f"could not move {applied.failed} frames (see the errors above); "
            "run rescore --apply again"
        )
    return lines
