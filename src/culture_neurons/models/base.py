"""What every model adapter shares; a family's adapter overrides only what differs.

An adapter owns one loaded model and its processor and knows: the prompt (appendix A.3 through the
model's chat template and processor, left-padded), the decoder-MLP `act_fn` modules, and the
valid-token mask (attention mask minus chat-template special tokens and image delimiters; the visual
token positions count, being what the decoder sees of the image).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from transformers import AutoProcessor, BatchFeature, PreTrainedModel

from culture_neurons.data.images import PixelBound
from culture_neurons.errors import InputError

from .image_bound import processor_bound
from .layers import decoder_act_fns, find_decoder_layers, mlp_width
from .loading import hub_kwargs, model_kwargs, model_provenance, resolve_class
from .prompt import build_messages, build_prompt_text
from .spec import TOKEN_SCOPES, AdapterSpec

log = logging.getLogger(__name__)

Item = Mapping[str, Any]  # question: str, options: list[str], image: PIL.Image.Image


def _is_unreachable_hub(err: OSError) -> bool:
    """transformers' "couldn't connect / not in the cache" errors, offline mode included."""
    text = str(err).lower()
    return any(
        hint in text for hint in ("couldn't connect", "offline mode", "cannot find the requested")
    )


class ModelAdapter:
    """Shared behaviour of the family adapters (see `culture_neurons.models.registry`)."""

    family: ClassVar[str] = ""
    #: transformers class (name or dotted path) that loads the weights; None: the subclass decides.
    model_class_name: ClassVar[str | None] = None
    #: Jinja chat template used instead of the processor's own; None keeps the processor's.
    chat_template: ClassVar[str | None] = None

    def __init__(
        self,
        model: PreTrainedModel,
        processor: Any,
        *,
        token_scope: str = "all",
        spec: AdapterSpec | None = None,
    ) -> None:
        if token_scope not in TOKEN_SCOPES:
            raise ValueError(f"token_scope must be one of {TOKEN_SCOPES}, got {token_scope!r}")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.token_scope = token_scope
        self.spec = spec
        self.layers_path, self._layers = find_decoder_layers(model)
        self._act_fns = decoder_act_fns(self._layers, self.layers_path)
        widths = {mlp_width(layer) for layer in self._layers}
        if len(widths) != 1:
            raise ValueError(f"decoder layers differ in MLP width {sorted(widths)}")
        self._n_neurons = widths.pop()
        self._prepare_tokenizer()
        self.visual_token_ids = frozenset(self._visual_token_ids())
        self.special_token_ids = frozenset(self._special_token_ids() - self.visual_token_ids)
        self._id_tensors: dict[tuple[str, torch.device], torch.Tensor] = {}

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | AdapterSpec) -> ModelAdapter:
        spec = AdapterSpec.from_mapping(spec)
        try:
            model = cls.load_model(spec)
            processor = cls.load_processor(spec, model)
        except OSError as err:
            if Path(spec.path).exists() or not _is_unreachable_hub(err):
                raise
            raise InputError(
                f"model {spec.path} cannot be loaded: the Hugging Face hub is not reachable "
                "from this machine (offline) and the model is not in the local cache. Download "
                "it where the hub is reachable, or set its path to a local folder"
            ) from err
        return cls(model, processor, token_scope=spec.token_scope, spec=spec)

    @classmethod
    def load_model(cls, spec: AdapterSpec) -> PreTrainedModel:
        name = spec.model_class or cls.model_class_name
        if name is None:
            raise ValueError(f"family {cls.family!r} needs a model_class in its spec")
        return resolve_class(name).from_pretrained(spec.path, **model_kwargs(spec))

    @classmethod
    def load_processor(cls, spec: AdapterSpec, model: PreTrainedModel) -> Any:
        return AutoProcessor.from_pretrained(
            spec.path, **hub_kwargs(spec), **dict(spec.processor_kwargs)
        )

    def _prepare_tokenizer(self) -> None:
        tok = self.tokenizer
        # Left padding keeps every row's last prompt token at the end, where generation continues.
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        gen = getattr(self.model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:
            gen.pad_token_id = tok.pad_token_id
        rows = self.model.get_input_embeddings().num_embeddings
        if len(tok) > rows:
            # A token id past the embedding table would crash the lookup. Conversions that add
            # placeholder tokens this way (Pangea-7B-hf's model card resizes to the tokenizer)
            # need new rows; the image features replace the placeholders' embeddings anyway.
            log.warning(
                "resizing input embeddings from %d to %d rows to cover the tokenizer",
                rows,
                len(tok),
            )
            self.model.resize_token_embeddings(len(tok))

    def _visual_token_ids(self) -> set[int]:
        """Placeholder ids the processor expands into one position per visual token."""
        names = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
        for owner in (self.processor, self.model.config):
            ids = {getattr(owner, n) for n in names if isinstance(getattr(owner, n, None), int)}
            ids = {i for i in ids if 0 <= i < len(self.tokenizer)}
            if ids:
                return ids
        return set()

    def _special_token_ids(self) -> set[int]:
        tok = self.tokenizer
        ids = set(tok.all_special_ids)
        # Chat markers such as <|im_start|> or <|vision_start|> are added tokens flagged special,
        # which not every tokenizer version lists among all_special_ids.
        for token_id, added in getattr(tok, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                ids.add(int(token_id))
        return ids

    # ------------------------------------------------------------------------------- structure
    def act_fn_modules(self) -> list[torch.nn.Module]:
        """The decoder MLPs' `act_fn` modules in layer order (never the vision tower's)."""
        return list(self._act_fns)

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self._layers

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def n_neurons(self) -> int:
        """MLP neurons per decoder layer (the intermediate size)."""
        return self._n_neurons

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def metadata(self) -> dict[str, Any]:
        """What identifies this model's activations (for artifact attributes)."""
        spec = self.spec
        unknown = {"model_path": None, "revision": None, "commit": None}
        return {
            "family": self.family,
            **(model_provenance(spec, self.model) if spec else unknown),
            "dtype": str(self.dtype).removeprefix("torch."),
            "token_scope": self.token_scope,
            "image": spec.image if spec else "use",
            "decoder_layers_path": self.layers_path,
            "n_layers": self.n_layers,
            "n_neurons": self.n_neurons,
            "model_class": type(self.model).__name__,
            "transformers_version": transformers.__version__,
        }

    # ---------------------------------------------------------------------------------- inputs
    @property
    def takes_images(self) -> bool:
        """Whether prompts carry the item's image: a VLM's processor has an image processor,
        unless the model entry says ``image: drop`` (the blind control)."""
        if self.spec is not None and self.spec.image == "drop":
            return False
        return getattr(self.processor, "image_processor", None) is not None

    @property
    def image_bound(self) -> PixelBound | None:
        """How small an item's image may be decoded without changing this model's input (what
        its image processor resizes to); None: decode at full size (no image, or a processor
        whose resizing is not known)."""
        if not self.takes_images:
            return None
        return processor_bound(getattr(self.processor, "image_processor", None))

    def render_prompt(
        self, question: str, options: Sequence[str], *, with_image: bool | None = None
    ) -> str:
        """The appendix A.3 prompt through the chat template, with the assistant turn opened;
        without an image (a text item, or a blind run) it drops " based on the image"."""
        with_image = self.takes_images if with_image is None else with_image
        text = build_prompt_text(question, options, with_image=with_image)
        template = (
            self.chat_template
            or getattr(self.processor, "chat_template", None)
            or getattr(self.tokenizer, "chat_template", None)
        )
        if template is None:
            if with_image:
                raise ValueError(f"{self.family}: no chat template says where the image goes")
            return text  # a base language model sees the bare instruction
        is_vlm_processor = getattr(self.processor, "image_processor", None) is not None
        return self.processor.apply_chat_template(
            build_messages(text, with_image=with_image, typed_content=is_vlm_processor),
            chat_template=template,
            add_generation_prompt=True,
            tokenize=False,
        )

    def build_batch(
        self, items: Sequence[Item], *, replies: Sequence[str] | None = None
    ) -> BatchFeature:
        """Prompts and images of `items`, left-padded, on the model's input device and dtype.
        ``replies`` (one per item) are appended after the opened assistant turn: a
        teacher-forced batch (see `build_teacher_forced_batch`)."""
        if not items:
            raise ValueError("build_batch needs at least one item")
        if replies is not None and len(replies) != len(items):
            raise ValueError(f"{len(replies)} replies for {len(items)} items")
        has_image = [item.get("image") is not None for item in items]
        with_image = self.takes_images and has_image[0]
        if self.takes_images and len(set(has_image)) > 1:
            raise ValueError("a batch mixes items with and without an image")
        texts = [
            self.render_prompt(item["question"], item["options"], with_image=with_image)
            for item in items
        ]
        if replies is not None:
            texts = [text + reply for text, reply in zip(texts, replies, strict=True)]
        call: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if self._template_writes_bos(texts):
            call["add_special_tokens"] = False  # the template wrote BOS already; avoid a second
        if with_image:
            call["images"] = [item["image"].convert("RGB") for item in items]
        return self.to_model(self.processor(**call))

    def _template_writes_bos(self, texts: Sequence[str]) -> bool:
        bos = self.tokenizer.bos_token
        return bool(bos) and all(text.startswith(bos) for text in texts)

    def build_teacher_forced_batch(
        self, items: Sequence[Item], replies: Sequence[str]
    ) -> tuple[BatchFeature, torch.Tensor]:
        """The batch of prompt + reply (left-padded, so every reply ends its row) and each
        reply's token count ``[B]``: the tokens of the whole text minus those of the prompt
        alone, tokenized as the batch is (image placeholders count alike in both)."""
        batch = self.build_batch(items, replies=replies)
        with_image = self.takes_images and items[0].get("image") is not None
        prompts = [
            self.render_prompt(item["question"], item["options"], with_image=with_image)
            for item in items
        ]
        whole = [prompt + reply for prompt, reply in zip(prompts, replies, strict=True)]
        options = {"add_special_tokens": not self._template_writes_bos(whole)}
        n_whole = [len(ids) for ids in self.tokenizer(whole, **options)["input_ids"]]
        n_prompt = [len(ids) for ids in self.tokenizer(prompts, **options)["input_ids"]]
        counts = torch.tensor([a - b for a, b in zip(n_whole, n_prompt, strict=True)])
        if (counts < 1).any():
            raise ValueError("a reply adds no token to its prompt (an empty option text?)")
        return batch, counts

    def to_model(self, batch: BatchFeature) -> BatchFeature:
        """Move a batch to the input device, floating tensors (pixels) to the model's dtype."""
        device, dtype = self.device, self.dtype
        for key, value in list(batch.items()):
            if isinstance(value, torch.Tensor):
                batch[key] = value.to(
                    device=device, dtype=dtype if value.is_floating_point() else None
                )
        return batch

    def _ids_tensor(self, which: str, device: torch.device) -> torch.Tensor:
        key = (which, device)
        if key not in self._id_tensors:
            ids = self.special_token_ids if which == "special" else self.visual_token_ids
            self._id_tensors[key] = torch.tensor(sorted(ids), dtype=torch.long, device=device)
        return self._id_tensors[key]

    def visual_token_mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, T] bool: positions holding a visual token (expanded image placeholders)."""
        input_ids = batch["input_ids"]
        visual = torch.isin(input_ids, self._ids_tensor("visual", input_ids.device))
        return visual & batch["attention_mask"].bool()

    def valid_token_mask(
        self, batch: Mapping[str, torch.Tensor], scope: str | None = None
    ) -> torch.Tensor:
        """[B, T] bool over the prompt: attention mask minus special tokens and image delimiters.

        scope "all" (default: the adapter's token_scope) counts text and visual positions, "text"
        the non-visual ones, "image" the visual ones; text and image partition "all".
        """
        scope = self.token_scope if scope is None else scope
        if scope not in TOKEN_SCOPES:
            raise ValueError(f"scope must be one of {TOKEN_SCOPES}, got {scope!r}")
        input_ids = batch["input_ids"]
        kept = batch["attention_mask"].bool()
        valid = kept & ~torch.isin(input_ids, self._ids_tensor("special", input_ids.device))
        if scope == "all":
            return valid
        visual = self.visual_token_mask(batch)
        return valid & visual if scope == "image" else valid & ~visual

    # ------------------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(
        self, batch: Mapping[str, torch.Tensor], *, max_new_tokens: int = 20, **kwargs: Any
    ) -> torch.Tensor:
        """Greedy continuation (paper 4.3: no sampling); returns only the new tokens, [B, new]."""
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            # Hub generation configs (Qwen's) set sampling knobs that greedy decoding ignores.
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        options.update(kwargs)
        output = self.model.generate(**batch, **options)
        return output[:, batch["input_ids"].shape[1] :]

    def decode(self, new_tokens: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
