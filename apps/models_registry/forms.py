"""Forms of the registry's admin pages: what an operator types, parsed into a service's arguments
(the service validates the values themselves: steps, thresholds, environments)."""

import json
from typing import Any, cast

from django import forms
from django.conf import settings

from apps.models_registry.models import Rollout
from apps.models_registry.services.rollouts import CANARY_STEPS, SHADOW_MIRROR_PERCENT


class RolloutStartForm(forms.Form):
    """The "Start a rollout…" action's form; `rollout_arguments()` are rollout_start's."""

    environment = forms.ChoiceField(required=False)
    strategy = forms.ChoiceField(
        choices=Rollout.Strategy.choices, initial=Rollout.Strategy.CANARY, widget=forms.RadioSelect
    )
    steps = forms.CharField(
        required=False,
        initial=", ".join(map(str, CANARY_STEPS)),
        help_text="canary: the candidate's percent of the traffic at each step, comma-separated, up to 100",
    )
    mirror_percent = forms.IntegerField(
        required=False,
        initial=SHADOW_MIRROR_PERCENT,
        help_text="shadow: the percent of live requests copied to the candidate",
    )
    dwell_s = forms.FloatField(
        label="Dwell seconds", min_value=0, help_text="each step lasts at least this long"
    )
    thresholds = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text='optional JSON object overriding the thresholds below, e.g. {"min_samples": 200}',
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    def __init__(self, *args: Any, next_environment: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        default = f"the next environment ({next_environment})" if next_environment else "the next environment"
        environment = cast("forms.ChoiceField", self.fields["environment"])
        environment.choices = [("", default)] + [(e, e) for e in settings.INFERENCE_ENVIRONMENTS]
        self.fields["dwell_s"].initial = settings.INFERENCE_ROLLOUT_DWELL_S

    def clean_steps(self) -> list[int] | None:
        text = self.cleaned_data["steps"].strip()
        if not text:
            return None
        try:
            return [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError as exc:
            raise forms.ValidationError("whole percentages separated by commas, e.g. 5, 25, 50, 100") from exc

    def clean_thresholds(self) -> dict[str, Any] | None:
        text = self.cleaned_data["thresholds"].strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError('a JSON object, e.g. {"min_samples": 200}')
        return value

    def rollout_arguments(self) -> dict[str, Any]:
        """rollout_start's keyword arguments (version and user aside) from the cleaned form."""
        data = self.cleaned_data
        canary = data["strategy"] == Rollout.Strategy.CANARY
        return {
            "environment": data["environment"] or None,
            "strategy": data["strategy"],
            "steps": data["steps"] if canary else None,
            "mirror_percent": None if canary else data["mirror_percent"],
            "dwell_s": data["dwell_s"],
            "thresholds": data["thresholds"],
            "reason": data["reason"],
        }
