"""The pyfunc wrapper of a recorded selection (logged as MLflow "model from code").

Self-contained on purpose (only mlflow and pandas): whoever loads
``models:/<name>@<alias>`` gets the chosen vectors without installing ohlora_eval.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SelectedLatents(PythonModel):
    """``predict(None)`` -> the chosen latent vectors, one row each, 519 columns "0".."518"."""

    # The model takes no input, so there is no input schema to infer: no type hints on
    # ``predict``, and MLflow's hint check is off (else it warns on every log and load).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self._z = pd.read_csv(context.artifacts["z_vectors"], dtype="float32")
        self._cases = pd.read_csv(context.artifacts["group_names"])["case"].tolist()

    def predict(self, context, model_input=None, params=None):
        out = self._z.copy()
        out.index = pd.Index(self._cases, name="case")
        return out


mlflow.models.set_model(SelectedLatents())
