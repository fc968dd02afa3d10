"""Phase 4: verify, `verify --snapshot --annotations` against the scratch database and collections."""

from __future__ import annotations

from typing import Any

from drtool.errors import VerificationFailed
from drtool.ops.drill.options import DrillState
from drtool.ops.snapshot.catalog import SnapshotInfo
from drtool.ops.verify.closure import verify as verify_closure
from drtool.ops.verify.report import VerifyOptions


def verify(drill: DrillState, info: SnapshotInfo, detail: dict[str, Any]) -> None:
    # annotations=True: --snapshot alone leaves them out, but the drill rebuilt them into scratch collections
    # and must prove they hold every annotation exactly once (an empty list when the database has none).
    report = verify_closure(drill.scratch_settings(),
                            VerifyOptions(snapshot=info.id, identity=drill.options.identity, annotations=True),
                            emit=drill.progress_only)
    summary = report.to_dict()
    detail.update(breaks=summary["breaks"], counts=summary["counts"], files=summary["files"],
                  datasets=len(summary["datasets"]))
    if summary["annotations"]:
        detail["annotation_apps"] = len(summary["annotations"])
        detail["annotations"] = [{k: a.get(k) for k in ("app_id", "collection", "annotations", "vectors", "ok",
                                                        "breaks", "note")} for a in summary["annotations"]]
    if not report.ok:
        examples = [f"{kind}: " + ", ".join(f"{k}={v}" for k, v in ex[0].items() if v is not None)
                    for kind, ex in summary["examples"].items() if ex]
        raise VerificationFailed(f"verify found {summary['breaks']} break(s) "
                                 f"({', '.join(f'{k} {n}' for k, n in summary['counts'].items())}); "
                                 + "; ".join(examples[:5]))
