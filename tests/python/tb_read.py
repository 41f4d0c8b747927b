"""Read a TensorBoard log folder with TensorBoard's own loader; print tags, steps and values as JSON."""
import json, sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
out = {"scalars": {}, "text": {}}
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
for tag in acc.Tags()["tensors"]:
    out["text"][tag] = [[e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")] for e in acc.Tensors(tag)]
print(json.dumps(out))
