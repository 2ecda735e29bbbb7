"""Every path under ``results/``: the one place that spells them.

The rules call these with wildcard patterns (``ablation_dir("{model}", "{selector}",
"{intervention}")``) for their outputs; the plan and the input functions call them with names.
An intervention other than the headline one (zero) writes under ``interventions/{name}/``.
"""

from __future__ import annotations

from culture_neurons.ablation.conditions import HEADLINE, ratio_label
from culture_neurons.ablation.partial import partial_dir
from culture_neurons.selection.conventions import DECODER_MLP

RESULTS = "results"
SUMMARY_DIR = f"{RESULTS}/summary"
FIGURES_DIR = f"{RESULTS}/figures"
FIGURE_EXTS = (".png", ".pdf")


def figure_files(prefix: str) -> list[str]:
    """A figure is written as PNG and PDF: ``prefix.png``, ``prefix.pdf``."""
    return [f"{prefix}{ext}" for ext in FIGURE_EXTS]


# -- data and downloads -----------------------------------------------------------------------
def data_dir(dataset: str) -> str:
    return f"{RESULTS}/data/{dataset}"


def items(dataset: str, task: str = "") -> str:
    """items.parquet of the dataset, or of an extra task (control, exclusion)."""
    return f"{data_dir(dataset)}/{task + '/' if task else ''}items.parquet"


def train_items(dataset: str) -> str:
    return f"{data_dir(dataset)}/train_items.parquet"


def data_report(dataset: str, task: str = "", ext: str = ".json") -> str:
    return f"{data_dir(dataset)}/{task + '/' if task else ''}report{ext}"


def model_download_record(model: str) -> str:
    """Rule download_model's record of a hub model (repo, requested revision, resolved commit)."""
    return f"{RESULTS}/downloads/models/{model}.json"


def dataset_download_record() -> str:
    return f"{RESULTS}/downloads/dataset.json"


# -- model weights ------------------------------------------------------------------------------
def demo_weights(model: str) -> str:
    """Where rule train_demo trains a demo model that does not use shipped weights."""
    return f"{RESULTS}/{model}/demo_weights"


def demo_model_report(model: str) -> str:
    return f"{RESULTS}/{model}/demo_model.json"


def checkpoint_dir(model: str) -> str:
    """Where rule prepare_checkpoint converts a GGUF model."""
    return f"{RESULTS}/{model}/checkpoint"


# -- record, attribute, select ------------------------------------------------------------------
def activations(model: str, site: str = DECODER_MLP) -> str:
    """The activation store of one site: the decoder MLP's, or rule record_site's of another."""
    if site == DECODER_MLP:
        return f"{RESULTS}/{model}/activations.zarr"
    return f"{RESULTS}/{model}/sites/{site}.zarr"


def site_report(model: str, site: str) -> str:
    """Rule record_site's report: units, time and store bytes per item."""
    return f"{RESULTS}/{model}/sites/{site}.json"


def baseline_dir(model: str) -> str:
    return f"{RESULTS}/{model}/baseline"


def baseline(model: str, split: str) -> str:
    """The unmasked answers of one split (identification, evaluation)."""
    return f"{baseline_dir(model)}/{split}.parquet"


def attribution_store(model: str) -> str:
    return f"{RESULTS}/{model}/attribution.zarr"


def attribution_report(model: str) -> str:
    return f"{RESULTS}/{model}/attribution.json"


def masks(model: str, selector: str) -> str:
    return f"{RESULTS}/{model}/masks/{selector}.zarr"


def masks_report(model: str, selector: str) -> str:
    return f"{RESULTS}/{model}/masks/{selector}.json"


# -- ablate -------------------------------------------------------------------------------------
def intervention_prefix(model: str, intervention: str) -> str:
    if intervention == HEADLINE:
        return f"{RESULTS}/{model}"
    return f"{RESULTS}/{model}/interventions/{intervention}"


def ablation_dir(model: str, selector: str, intervention: str) -> str:
    """The ablate job's tables at the headline ratio, one per source culture."""
    return f"{intervention_prefix(model, intervention)}/ablations/{selector}"


def ablation_table(model: str, selector: str, intervention: str, source: str) -> str:
    return f"{ablation_dir(model, selector, intervention)}/{source}.parquet"


def sweep_base(model: str, selector: str, intervention: str) -> str:
    return f"{intervention_prefix(model, intervention)}/ablations_sweep/{selector}"


def sweep_dir(model: str, selector: str, intervention: str, ratio: float) -> str:
    """The ablate job's tables at a swept ratio other than the headline."""
    return f"{sweep_base(model, selector, intervention)}/{ratio_label(ratio)}"


def ablate_shard_done(model: str, selector: str, intervention: str, shard: int | str) -> str:
    """The done marker of one shard of an ablate job, in that job's partial folder (which the
    gathering ablate job removes: the marker is temp())."""
    partial = partial_dir(ablation_dir(model, selector, intervention))
    return f"{partial}/shard{shard}.done"


def control_effect(model: str, ext: str = ".parquet") -> str:
    """The control-effect table (.parquet) and its report (.md)."""
    return f"{RESULTS}/{model}/control_effect{ext}"


# -- matrices and figures -----------------------------------------------------------------------
def matrices_dir(model: str, intervention: str) -> str:
    return f"{intervention_prefix(model, intervention)}/matrices"


def matrix(model: str, selector: str, intervention: str, kind: str = "") -> str:
    """The matrices job's headline tables: kind '' (matrix), 'summary' or 'significance'."""
    suffix = f".{kind}.parquet" if kind else ".parquet"
    return f"{matrices_dir(model, intervention)}/{selector}{suffix}"


def sweep_matrix(model: str, selector: str, intervention: str, kind: str = "") -> str:
    """The matrices job's every-ratio tables: kind '' (matrix), 'summary' or 'significance'."""
    suffix = f".{kind}.parquet" if kind else ".parquet"
    return f"{matrices_dir(model, intervention)}/sweep/{selector}{suffix}"


def figures_dir(model: str, intervention: str = HEADLINE) -> str:
    if intervention == HEADLINE:
        return f"{FIGURES_DIR}/{model}"
    return f"{FIGURES_DIR}/{model}/{intervention}"


def selector_figure(model: str, selector: str, intervention: str, figure: str) -> str:
    """Prefix of a selector's figure: ablation (heatmaps), layers or significance."""
    return f"{figures_dir(model, intervention)}/{selector}_{figure}"


def model_figure(model: str, figure: str) -> str:
    """Prefix of a model's figure: stability, overlap, dose_response_{intervention}."""
    return f"{figures_dir(model)}/{figure}"


def baseline_figure() -> str:
    return f"{FIGURES_DIR}/baseline_accuracy"


# -- per-model analyses -------------------------------------------------------------------------
def dose_response_table(model: str) -> str:
    return f"{RESULTS}/{model}/dose_response.csv"


def stability(model: str, name: str, site: str = DECODER_MLP) -> str:
    """summary.csv, jaccards.parquet or frequency.zarr of the stability stage (of one site)."""
    if site == DECODER_MLP:
        return f"{RESULTS}/{model}/stability/{name}"
    return f"{RESULTS}/{model}/sites/{site}/stability/{name}"


def stability_figure(model: str, site: str = DECODER_MLP) -> str:
    """Prefix of the stability figure (of one site)."""
    return model_figure(model, "stability" if site == DECODER_MLP else f"{site}_stability")


def overlap(model: str, name: str) -> str:
    """selectors.parquet, culture_pairs.parquet or correlation.csv of the overlap stage."""
    return f"{RESULTS}/{model}/overlap/{name}"


def atlas_dir(model: str) -> str:
    """The atlas's static site (index.html, neurons/, pairs/, thumbs/)."""
    return f"{RESULTS}/{model}/atlas"


def atlas_export(model: str) -> str:
    """The atlas's JSONL export, one record per neuron, beside the site."""
    return f"{RESULTS}/{model}/atlas.jsonl"


def atlas_figure(model: str) -> str:
    """The atlas's layer histograms of every selector (PNG), the report's entry to the site."""
    return f"{model_figure(model, 'atlas_layers')}.png"


# -- summary ------------------------------------------------------------------------------------
def summary(name: str) -> str:
    """A cross-model table under results/summary (table2.csv, baseline_accuracy.csv, ...)."""
    return f"{SUMMARY_DIR}/{name}"
