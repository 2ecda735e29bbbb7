"""The two labels every ranking and mask store shares (one definition each; torch-free, so the
analysis imports them without loading the model stack)."""

#: Rank of a neuron that is no candidate of that culture (rankings are int32, 0 = best).
NOT_RANKED = -1

#: The one source row of a culture-independent selector's mask store (RND, attr_general).
ALL_CULTURES = "ALL"
