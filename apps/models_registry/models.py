"""What the registry knows: models, their versions and artifacts, and what is deployed where."""

from typing import Any

from django.conf import settings
from django.db import models


def queue_name(model_name: str) -> str:
    """The Celery queue (a Redis list) of a model's requests; its workers consume only it."""
    return f"inference.{model_name}"


class RegisteredModel(models.Model):
    """A served model; each one gets its own Celery queue so its workers scale on their own."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    # The metric that gates promotion and its minimum, e.g. accuracy >= 0.9.
    gate_metric = models.CharField(max_length=64, default="accuracy")
    gate_minimum = models.FloatField(default=0.0)
    # Dynamic batching: requests arriving within max_delay_ms are run together, up to
    # max_batch_size rows in one predict.
    max_batch_size = models.PositiveIntegerField(default=64)
    max_delay_ms = models.FloatField(default=2.0)
    # What a rollout's analysis allows this model's candidates (services/rollouts.py
    # ANALYSIS_DEFAULTS names them), from its card's "rollout_thresholds"; a rollout may override.
    rollout_thresholds = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return queue_name(self.name)


class SignatureStatus(models.TextChoices):
    UNSIGNED = "unsigned", "Unsigned"
    VERIFIED = "verified", "Verified"
    UNKNOWN_KEY = "unknown_key", "Signed by an untrusted key"
    INVALID = "invalid", "Invalid (files changed after signing)"


class ModelVersion(models.Model):
    """One trained version: its tensor signature (what the API validates against) and metrics."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # {"inputs": [{"name", "datatype", "shape"}], "outputs": [...], "class_names": [...]}
    signature = models.JSONField()
    metrics = models.JSONField(default=dict, blank=True)
    # Statistics of the validation set's inputs and of the version's predictions on it, computed
    # after registration (apps/models_registry/drift.py); workers compare live traffic with them.
    reference_stats = models.JSONField(null=True, blank=True, editable=False)
    framework = models.CharField(max_length=64, default="keras")
    notes = models.TextField(blank=True)
    # The signature over its files (docs/registry.md, "Model of trust"), as checked at upload
    # against every trusted key; gates and workers check again for their environment.
    signature_status = models.CharField(
        max_length=16, choices=SignatureStatus.choices, default=SignatureStatus.UNSIGNED
    )
    signer = models.CharField(max_length=150, blank=True, help_text="the trusted key that verified it")
    signature_detail = models.TextField(blank=True)
    # Set by a superuser, with a reason, for a model that needs Keras' unsafe deserialization
    # (a Lambda layer): only then is it loaded with safe mode off.
    unsafe_trusted_reason = models.TextField(blank=True)
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
        SIGNATURE = "signature", "Signature (model.sig)"
        OTHER = "other", "Other"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    filename = models.CharField(max_length=255)
    uri = models.CharField(max_length=1024)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    # Set when retention removed the stored bytes; the record (and checksum) stays for history.
    pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["version", "kind", "filename"]
        constraints = [models.UniqueConstraint(fields=["version", "filename"], name="unique_artifact_name")]

    def __str__(self) -> str:
        return f"{self.version} {self.filename}"


class Deployment(models.Model):
    """Which version of a model is live in an environment, and the one it replaced."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="deployments")
    environment = models.CharField(max_length=32)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    # What a rollback returns to.
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The last good version here (services/deployments.py `last_good_version`): the live one once
    # a worker loaded it, until then the last good one before it. It keeps serving while a newer
    # live version cannot load anywhere, across restarts (workers load it when the live one fails).
    last_good_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # When a worker first loaded the live version since it was made live (None: none yet); the
    # moment it became the last good version.
    served_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(auto_now=True)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["model__name", "environment"]
        constraints = [
            models.UniqueConstraint(fields=["model", "environment"], name="one_live_version_per_env")
        ]
        permissions = [
            ("promote_deployment", "Can promote a model version to an environment"),
            ("rollback_deployment", "Can roll a deployment back to its previous version"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version.number} @ {self.environment}"


class RegistryEvent(models.Model):
    """Append-only audit history: every register, promote, rollback and failed gate or load."""

    class Action(models.TextChoices):
        REGISTER = "register", "Registered"
        PROMOTE = "promote", "Promoted"
        ROLLBACK = "rollback", "Rolled back"
        GATE_FAILED = "gate_failed", "Gate failed"
        LOAD_FAILED = "load_failed", "Worker load failed"
        SERVED = "served", "Served (a worker loaded it while live)"
        REFUSED = "refused", "Artifact refused"
        TRUSTED = "trusted", "Trusted for unsafe loading"
        PRUNE = "prune", "Artifacts pruned"
        ROLLED_OUT = "rolled_out", "Rolled out by the release pipeline"
        ROLLOUT_START = "rollout_start", "Rollout started"
        ROLLOUT_STEP = "rollout_step", "Rollout stepped"
        ROLLOUT_PROMOTE = "rollout_promote", "Rollout promoted"
        ROLLOUT_ROLLBACK = "rollout_rollback", "Rollout rolled back"
        ROLLOUT_ABORT = "rollout_abort", "Rollout aborted"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="events")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    environment = models.CharField(max_length=32, blank=True)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="user name, or the process that acted")
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        if self.to_version is None:
            arrow = ""
        elif self.from_version is None:
            arrow = f" v{self.to_version}"
        else:
            arrow = f" {self.from_version}->{self.to_version}"
        where = f" @ {self.environment}" if self.environment else ""
        return f"{self.model.name}: {self.get_action_display()}{arrow}{where}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("registry events are append-only")
        super().save(*args, **kwargs)


class OutboxEvent(models.Model):
    """A promotion/rollback message, written in the same transaction as the change it reports.

    The release pipeline publishes pending rows to SNS and sets `published_at` once SNS accepted
    them; the event id doubles as the message deduplication id.
    """

    event_id = models.UUIDField(unique=True)
    topic = models.CharField(max_length=32, help_text="the environment whose topic receives it")
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.payload.get('action')} {self.payload.get('model')} v{self.payload.get('version')}"


class Rollout(models.Model):
    """A candidate version taking over an environment's traffic step by step (canary), or shown
    a copy of it (shadow), while the analysis compares it with the live version.

    At most one runs per model and environment. The live version (`Deployment.version`) does not
    change until the rollout is promoted; rolling back or aborting one only stops the candidate.
    """

    class Strategy(models.TextChoices):
        CANARY = "canary", "Canary"
        SHADOW = "shadow", "Shadow"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        PROMOTED = "promoted", "Promoted"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ABORTED = "aborted", "Aborted"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="rollouts")
    environment = models.CharField(max_length=32)
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rollouts")
    # What was live when it started; promotion is refused if something else is live by then.
    baseline = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    strategy = models.CharField(max_length=16, choices=Strategy.choices)
    # Canary: the candidate's share (percent) of unpinned traffic at each step, ending at 100.
    # Shadow: one step; the share of live requests mirrored to the candidate is mirror_percent.
    steps = models.JSONField(default=list)
    step = models.PositiveIntegerField(default=0, help_text="index into steps")
    mirror_percent = models.PositiveIntegerField(default=0)
    # Each step lasts at least this long (and until enough samples are in) before the next.
    dwell_s = models.FloatField(default=60.0)
    # What the analysis allows (services/rollouts.py ANALYSIS_DEFAULTS, then the model card's,
    # then these).
    thresholds = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    step_started_at = models.DateTimeField()
    # The latest analysis: its figures, verdict and how many samples it still waits for.
    analysis = models.JSONField(default=dict, blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="why it ended")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "environment"],
                condition=models.Q(state="running"),
                name="one_running_rollout_per_env",
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.model.name} v{self.candidate.number} {self.strategy} @ {self.environment} ({self.state})"
        )

    @property
    def weight(self) -> int:
        """The candidate's share (percent) of unpinned traffic now (0 for a shadow)."""
        if self.strategy != self.Strategy.CANARY or self.state != self.State.RUNNING:
            return 0
        return int(self.steps[self.step])
