import shlex
from pathlib import Path

from snakemake.utils import update_config


def use_cli_configfiles_only():
    """A --configfile on the command line replaces config.yaml instead of merging into it.

    Snakemake merges mappings recursively, so the demo's models and dataset keys would leak
    into configs/paper.yaml; --config KEY=VALUE overrides still apply on top.
    """
    if workflow.overwrite_configfiles:
        config.clear()
        update_config(config, workflow.config_settings.overwrite_config)


def dataset_name():
    return config["dataset"]["name"]


def data_dir():
    return f"results/data/{dataset_name()}"


def is_demo_dataset():
    return "demo" in config["dataset"]


def get_demo_shards():
    """The demo source parquet files (rule make_demo_data writes them)."""
    root = config["dataset"]["local_dir"]
    return [
        f"{root}/data/test-00000-of-00001.parquet",
        f"{root}/data/train-00000-of-00001.parquet",
    ]


def get_prepare_data_input(wildcards):
    if is_demo_dataset():
        return get_demo_shards()
    dataset = config["dataset"]
    if dataset["source"] == "local":
        return sorted(
            str(p)
            for p in Path(dataset["local_dir"]).glob(
                dataset.get("files", "data/test-*.parquet")
            )
        )
    return []


def get_prepare_data_args(wildcards):
    """The dataset section as CLI flags: every value that shapes items.parquet."""
    dataset = config["dataset"]
    flags = {
        "name": dataset["name"],
        "source": dataset["source"],
        "local-dir": dataset.get("local_dir") or "",
        "files": dataset.get("files", "data/test-*.parquet"),
        "train-files": dataset.get("train_files") or "",
        "hub-id": dataset.get("hub_id") or "",
        "revision": dataset.get("revision") or "",
        "language": dataset.get("language", "english"),
        "grouping": dataset["grouping"],
        "unknown-pair": dataset.get("unknown_pair", "error"),
        "split-seed": dataset.get("split_seed", 0),
        "labels-file": dataset.get("labels_file") or "",
    }
    return " ".join(
        f"--{key} {shlex.quote(str(value))}" for key, value in flags.items()
    )


def get_demo_args(wildcards):
    demo = config["dataset"]["demo"]
    return (
        f"--spec {demo['spec']} --seed {demo.get('seed', 1234)} "
        f"--test-items-per-pair {demo.get('test_items_per_pair', 64)} "
        f"--train-items-per-pair {demo.get('train_items_per_pair', 320)} "
        f"--image-size {demo.get('image_size', 112)}"
    )


def get_final_targets():
    return [
        f"{data_dir()}/items.parquet",
        f"{data_dir()}/report.md",
    ]
