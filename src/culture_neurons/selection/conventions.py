"""The two labels every ranking and mask store shares (one definition each; torch-free, so the
analysis imports them without loading the model stack)."""

#: Rank of a neuron that is no candidate of that culture (rankings are int32, 0 = best).
NOT_RANKED = -1

#: The one source row of a culture-independent selector's mask store (RND, attr_general).
ALL_CULTURES = "ALL"

#: Where a model's units live (docs/sites.md): the decoder MLPs' act_fn neurons (the paper's),
#: the vision encoder's MLP activation neurons, and the decoder's attention heads.
DECODER_MLP, VISION_MLP, ATTENTION_HEADS = "decoder_mlp", "vision_mlp", "attention_heads"
SITES: tuple[str, ...] = (DECODER_MLP, VISION_MLP, ATTENTION_HEADS)


def site_instance(site: str, instance: str) -> str:
    """The selector instance ``instance`` at ``site``: the decoder MLP's keeps its name (every
    path of a decoder-only run is unchanged), another site's is ``<site>.<instance>``."""
    return instance if site == DECODER_MLP else f"{site}.{instance}"


def split_site(selector: str) -> tuple[str, str]:
    """(site, instance) of a selector instance name (the inverse of `site_instance`)."""
    site, dot, instance = selector.partition(".")
    if dot and site in SITES and site != DECODER_MLP:
        return site, instance
    return DECODER_MLP, selector
