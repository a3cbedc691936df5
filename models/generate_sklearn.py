"""Train a scikit-learn MLPClassifier on load_digits() and convert it with skl2onnx.

Run from the repository root:  python models/generate_sklearn.py

Needs scikit-learn and skl2onnx. The digits data set ships inside
scikit-learn (8x8 images, 64 features, values 0..16), so nothing is fetched.
The converter is called with ``zipmap=False`` so both outputs are plain
tensors: ``label`` (int64 [N]) and ``probabilities`` (float [N,10]).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import _common as C

GENERATOR = "generate_sklearn.py"
NAME = "sklearn_mlp"
EXERCISES = (
    "scikit-learn MLPClassifier(hidden 32,16, relu) on load_digits (64 features scaled /16), skl2onnx "
    "zipmap=False: input Cast, MatMul with [in,out] weight + Add of a [1,out] bias per layer, Relu, Softmax, "
    "Identity, ArgMax -> ai.onnx.ml ArrayFeatureExtractor (classes) -> Reshape -> Cast label path; "
    "outputs label int64 [N] and probabilities [N,10]; two outputs share the last layer."
)


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    sk_acc = float(clf.score(x_te, y_te))

    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": C.OPSET, "ai.onnx.ml": 3},
    )
    # skl2onnx leaves the batch dim unnamed; name it N like every other model.
    for value in (*onx.graph.input, *onx.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.dim_param = C.BATCH_AXIS
    path = C.save_model(onx, NAME, doc=EXERCISES, generator=GENERATOR)

    def reference(feed: dict) -> list:
        return [clf.predict(feed["input"]).astype(np.int64), clf.predict_proba(feed["input"])]

    hist = C.verify(path, reference=reference, rtol=1e-4, atol=1e-5)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, _ = sess.run(None, {"input": x_te})
    ort_acc = float(np.mean(label == y_te))
    C.report(NAME, path, hist)
    print(f"   sklearn test accuracy {sk_acc:.4f}, onnxruntime {ort_acc:.4f} on {len(y_te)} held-out digits")
    exporter = f"skl2onnx {skl2onnx.__version__} to_onnx zipmap=False (scikit-learn {sklearn.__version__})"
    entry = C.manifest_entry(NAME, path, source="skl2onnx", exporter=exporter, exercises=EXERCISES,
                             generator=GENERATOR, frameworks=("skl2onnx", "sklearn"),
                             extra={"test_accuracy_onnxruntime": round(ort_acc, 4)})  # fmt: skip
    C.update_manifest([entry])


if __name__ == "__main__":
    main()
