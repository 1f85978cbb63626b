"""Response bodies of the web service (pydantic models: validation and the OpenAPI schema)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ClassProbability", "ErrorResponse", "Explanation", "Health", "ImageInfo", "Liveness",
           "MalignancyRisk", "ModelRef", "OODResult", "PatientMetadata", "PredictionResponse"]


class ClassProbability(BaseModel):
    id: str = Field(description="training class id (taxonomy node)")
    name: str = Field(description="display name")
    probability: float


class MalignancyRisk(BaseModel):
    probability: float | None = Field(
        description="P(malignant): the summed probability of the model's malignant classes "
                    "(PA) after temperature scaling; null when the classes do not allow it")
    temperature: float = Field(description="softmax temperature applied to the logits")
    calibrated: bool = Field(description="whether a temperature was fitted on validation data")
    note: str | None = None


class OODResult(BaseModel):
    available: bool = Field(description="false when the model has no OOD statistics")
    flag: bool | None = Field(
        default=None, description="true: the photo does not look like the training images "
                                  "(disregard the prediction)")
    score: float | None = None
    threshold: float | None = None
    method: str | None = None
    percentile: float | None = None
    layer: str | None = Field(default=None, description="the layer with the largest score")
    reason: str | None = None


class Explanation(BaseModel):
    method: str
    target: str = Field(description="the class explained (the most probable one)")
    media_type: str = "image/png"
    png_base64: str = Field(description="heatmap overlaid on the photo, base64 PNG")
    width: int
    height: int


class ModelRef(BaseModel):
    id: str
    version: str
    backend: str


class ImageInfo(BaseModel):
    width: int = Field(description="width after EXIF orientation")
    height: int


class PatientMetadata(BaseModel):
    fused: bool = Field(description="whether the model uses age, sex and site")
    age: float | None = Field(default=None, description="years, as sent")
    sex: str | None = None
    site: str | None = None
    note: str | None = None


class PredictionResponse(BaseModel):
    model: ModelRef
    image: ImageInfo
    probabilities: dict[str, float] = Field(description="per training class, sums to 1")
    top_k: list[ClassProbability]
    levels: dict[str, dict[str, float]] = Field(
        description="taxonomy levels (malignant_vs_benign, melanoma_vs_rest, esteva3 where the "
                    "classes allow) by probability aggregation up the tree")
    malignancy_risk: MalignancyRisk
    ood: OODResult
    metadata: PatientMetadata = Field(description="the optional age/sex/site fields as used "
                                                  "(null: not given, encoded as unknown)")
    explanation: Explanation | None = None
    timing_ms: dict[str, float]
    disclaimer: str


class Health(BaseModel):
    status: str = Field(description="ok when ready; else starting or failed")
    ready: bool = Field(description="the model and its OOD screen loaded and a warm-up "
                                    "prediction succeeded")
    state: str = Field(description="starting, ready or failed")
    reason: str | None = Field(default=None, description="why not ready (failed)")
    warm_up_ms: float | None = None
    model_id: str
    version: str
    backend: str
    ood_available: bool
    ood: str = Field(description="on, or off (--no-ood)")
    uptime_s: float
    batching: dict[str, Any]


class Liveness(BaseModel):
    status: str = Field(description="alive")
    uptime_s: float


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, for people")
    code: str = Field(description="machine-readable reason, e.g. upload_too_large")
