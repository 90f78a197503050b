"""What the registry knows: models, their versions and artifacts, and what is deployed where."""

from django.conf import settings
from django.db import models


class RegisteredModel(models.Model):
    """A served model; each one gets its own Celery queue so its workers scale on their own."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    # The metric that gates promotion and its minimum, e.g. accuracy >= 0.9.
    gate_metric = models.CharField(max_length=64, default="accuracy")
    gate_minimum = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return f"inference.{self.name}"


class ModelVersion(models.Model):
    """One trained version: its tensor signature (what the API validates against) and metrics."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # {"inputs": [{"name", "datatype", "shape"}], "outputs": [...], "class_names": [...]}
    signature = models.JSONField()
    metrics = models.JSONField(default=dict, blank=True)
    framework = models.CharField(max_length=64, default="keras")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["model__name", "-number"]
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="unique_model_version")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"


class Artifact(models.Model):
    """A file of a version: the Keras model or a companion (.pickle, .csv, .xlsx)."""

    class Kind(models.TextChoices):
        MODEL = "model", "Model (.keras / .h5)"
        PREPROCESSING = "preprocessing", "Preprocessing (.pickle)"
        VALIDATION = "validation", "Validation set (.csv / .xlsx)"
        OTHER = "other", "Other"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    filename = models.CharField(max_length=255)
    uri = models.CharField(max_length=1024)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["version", "kind", "filename"]
        constraints = [models.UniqueConstraint(fields=["version", "filename"], name="unique_artifact_name")]

    def __str__(self) -> str:
        return f"{self.version} {self.filename}"


class Deployment(models.Model):
    """Which version of a model is live in an environment."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="deployments")
    environment = models.CharField(max_length=32)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    deployed_at = models.DateTimeField(auto_now=True)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["model__name", "environment"]
        constraints = [
            models.UniqueConstraint(fields=["model", "environment"], name="one_live_version_per_env")
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version.number} @ {self.environment}"
