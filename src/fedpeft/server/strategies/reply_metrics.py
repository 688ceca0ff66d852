"""How institutions' reply metrics are combined into one per round."""

from __future__ import annotations

from flwr.app import MetricRecord, RecordDict

from fedpeft.common.wire.names import NON_AVERAGED_METRICS, NUM_EXAMPLES


def aggregate_client_metrics(records: list[RecordDict],
                             weight_key: str = NUM_EXAMPLES) -> MetricRecord:
    """Example-weighted mean of each model metric; hardware timings are left out.

    Flower's default would also average `compute-s`, which is meaningless across
    institutions with different hardware; the recorder keeps those per client instead.
    """
    metric_records = [next(iter(record.metric_records.values())) for record in records]
    weights = [float(m[weight_key]) for m in metric_records]  # type: ignore[arg-type]
    total = sum(weights)
    result = MetricRecord()
    if total <= 0:
        return result
    keys = [k for k in metric_records[0] if k != weight_key and k not in NON_AVERAGED_METRICS]
    for key in keys:
        values = [m.get(key) for m in metric_records]
        numbers = [float(v) for v in values if isinstance(v, (int, float))]
        if len(numbers) == len(values):
            result[key] = sum(v * w for v, w in zip(numbers, weights, strict=True)) / total
    result[weight_key] = int(total)
    return result
