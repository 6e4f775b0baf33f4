"""FinstaModel: the host (SG-free, exported) + the SG branch (GTrm, R-GTrm, STGD) + adapters, and its losses.

The **host** (:class:`finsta_model.host.HostModel`) is the model a user
deploys: host features in (frames, grid cells, sentence vectors, token
states), embeddings and a late-interaction score out, no scene graphs. Finsta
post-trains it: the **SG branch** builds the fused embeddings
``host + adapter(host, SG)`` and the Finsta score ``cos(fused) + λ·fine``
(the teacher), and the host is trained on its own score with InfoNCE + hard
negatives and distilled from the teacher (pooled embeddings, score rankings,
node↔unit → token↔cell similarities). ``export`` ships ``model.host`` alone.

``embed(batch, branch)`` gives L2-normalised video and caption embeddings:

* ``"fused"`` — host + adapter(SG): the Finsta-augmented embedding;
* ``"host"`` — the host alone (pooled; its full score is :meth:`host_scores`).

With ``config.use_sg = False`` (the host-only baseline) there is no SG branch:
the same host, trained with the same InfoNCE + hard negatives, nothing else.

Example::

    model = FinstaModel(TrainConfig(), dims=dataset.manifest["feature_dims"])
    loss, parts = model.losses(batch)   # detached scalars {"nce", "osc", "ptc", "host_nce", "distill", ...}
    video, text = model.embed(batch, "fused")
    scores = model.host_scores(batch)   # [C, B] the host's own score
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from finsta_model.adapter import SGAdapter
from finsta_model.config import TrainConfig
from finsta_model.fine_grained import (FineGrained, TextUnits, VideoUnits, node_distillation, phrase_alignment,
                                       track_footprints, track_slots, unit_osc, unit_ptc)
from finsta_model.graphs import GraphBatch
from finsta_model.gtrm import GTrm
from finsta_model.host import HostModel, HostText, HostVideo
from finsta_model.losses import (distillation, object_spatial_contrast, predicate_temporal_contrast,
                                 match_slots, representation_distillation, score_distillation, slot_boxes,
                                 video_text_nce)
from finsta_model.rgtrm import DSGEncoder, DSGEncoding
from finsta_model.slot_units import SlotUnits, slot_places, slot_unit_contrast
from schemas.records import TEXT_NODE_KINDS

if TYPE_CHECKING:
    from finsta_model.gather import Gather

BRANCHES = ("fused", "host")
REP_TARGETS = ("video", "frame", "slot")   # what representation distillation teaches the host
SCORE_ROWS = 64     # captions per block of the video-side score
# the parameters the video-side SG-free score reads besides the host (export --video-sg-free ships them):
# the caption's TSG encoder, its unit heads, the slot head and the slots' unit heads; nothing that reads a
# video's scene graph
VIDEO_SIDE_TEXT = ("words.", "gtrm.", "node_align.", "fine.pair_text.", "rep_heads.slot.", "slot_units.")
RELATION_KIND = TEXT_NODE_KINDS.index("relation")


@dataclass
class Encodings:
    """:meth:`FinstaModel.encode`'s output: per video, caption, text node, detection or track of a batch."""

    host_text: HostText
    host_video: HostVideo
    video: Optional[torch.Tensor] = None     # [B, d] fused
    text: Optional[torch.Tensor] = None      # [C, d] fused
    nodes: Optional[torch.Tensor] = None     # [M, d] GTrm node states
    dsg: Optional[DSGEncoding] = None

    def gathered(self, gather: "Gather") -> "Encodings":
        """Every replica's encodings in rank order, with gradient (rows of :func:`merge_batches`' order)."""
        rows = gather.rows
        t = self.host_text
        host_text = HostText(pooled=rows(t.pooled), tokens=rows(t.tokens), mask=rows(t.mask))
        host_video = gathered_host_video(self.host_video, gather)
        if self.video is None:
            return Encodings(host_text, host_video)
        return Encodings(host_text, host_video, rows(self.video), rows(self.text), rows(self.nodes),
                         gathered_dsg(self.dsg, gather))


def gathered_host_video(v: HostVideo, gather: "Gather") -> HostVideo:
    """Every replica's host video encodings in rank order, with gradient (:meth:`Encodings.gathered`)."""
    rows = gather.rows
    # the host's video tokens are [B, T·(1 + cells), d]: pad whole frames, and padding repeats the
    # video's first token (HostModel.video: a max over tokens then needs no mask)
    per_frame, b, d = 1 + v.cells, len(v), v.tokens.shape[-1]
    frames = v.tokens.shape[1] // per_frame
    tokens = rows(v.tokens.reshape(b, frames, per_frame, d)).flatten(1, 2)
    mask = rows(v.mask.reshape(b, frames, per_frame)).flatten(1, 2)
    # the batch frames each video's tokens read, per video ([B, T'], -1 = padding): the replicas'
    # batches may have sub-sampled videos past the host's max_frames differently
    index = v.frame_index[None].expand(b, -1) if v.frame_index.dim() == 1 else v.frame_index
    slots = None if v.slots is None else rows(v.slots)
    states = None if v.slot_states is None else rows(v.slot_states)
    # [B, S, T·(1 + cells)], frame-major like the tokens: zero-padding whole frames at the end
    attention = None if v.slot_attention is None else rows(v.slot_attention)
    return HostVideo(pooled=rows(v.pooled), tokens=torch.where(mask[..., None], tokens, tokens[:, :1]), mask=mask,
                     cells=v.cells, frame_index=rows(index + 1) - 1, slots=slots, slot_states=states,
                     slot_attention=attention)


def gathered_dsg(d: DSGEncoding, gather: "Gather") -> DSGEncoding:
    rows = gather.rows
    return DSGEncoding(nodes=rows(d.nodes), frames=rows(d.frames), memory=rows(d.memory), video=rows(d.video),
                       tracks=rows(d.tracks))


def no_videos(v: HostVideo, d: DSGEncoding) -> tuple[HostVideo, DSGEncoding]:
    """Encodings of zero videos shaped like ``v`` and ``d`` (dtype, width, slots; gradient like ``v``'s): what a
    replica without videos of a kind hands the others' gathers (every rank makes the same calls)."""
    def empty(x: torch.Tensor, *shape: int) -> torch.Tensor:
        return x.new_zeros(shape).requires_grad_(x.requires_grad)
    width = v.pooled.shape[-1]
    slots = None if v.slots is None else empty(v.slots, 0, v.slots.shape[1], width)
    states = None if v.slot_states is None else empty(v.slot_states, 0, v.slot_states.shape[1], width)
    attention = None if v.slot_attention is None else empty(v.slot_attention, 0, v.slot_attention.shape[1], 0)
    host = HostVideo(pooled=empty(v.pooled, 0, width), tokens=empty(v.tokens, 0, 0, width),
                     mask=v.mask.new_zeros((0, 0)), cells=v.cells, frame_index=v.frame_index.new_zeros((0, 0)),
                     slots=slots, slot_states=states, slot_attention=attention)
    dsg = DSGEncoding(nodes=d.nodes.new_zeros((0, width)), frames=d.frames.new_zeros((0, 0, width)),
                      memory=d.memory.new_zeros((0, 0, width)), video=d.video.new_zeros((0, width)),
                      tracks=d.tracks.new_zeros((0, width)))
    return host, dsg


def build_host(config: TrainConfig, dims: dict[str, int]) -> HostModel:
    """The host of a run with ``config`` on shards with feature ``dims``."""
    return HostModel(dims, config.dim, config.heads, config.host_layers, config.dropout, config.host_fine_weight,
                     slots=config.host_slots)


class FinstaModel(nn.Module):
    def __init__(self, config: TrainConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        d = config.dim
        self.host = build_host(config, dims)
        if not config.use_sg:
            return
        self.words = nn.Embedding(config.label_buckets, d, padding_idx=0)
        self.gtrm = GTrm(dims["text_node"], d, config.heads, config.gtrm_layers, config.dropout)
        self.dsg = DSGEncoder(dims["detection"], d, config.heads, config.rgtrm_layers, config.dropout,
                              use_stgd=config.use_stgd)
        self.video_adapter = SGAdapter(d, config.dropout)
        self.text_adapter = SGAdapter(d, config.dropout)
        self.node_align = nn.Linear(d, d)
        if config.rep_distill_weight > 0 or config.video_side_weight > 0:
            # heads from the host's video embedding, frame tokens and slots to the DSG's read-outs (training only:
            # export ships the host, not these)
            self.rep_heads = nn.ModuleDict({name: nn.Linear(d, d) for name in REP_TARGETS})
        if config.fine_grained_weight > 0:
            # STGD's read-out needs a block between R-GTrm layers (none with one layer)
            self.fine = FineGrained(d, stgd_heads=config.heads if self._stgd_kernel() is not None else 0)
        if config.slot_unit_weight > 0:     # the video-side score's window units (finsta_model/slot_units.py)
            self.slot_units = SlotUnits(d)

    # ------------------------------------------------------------ embeddings
    def host_units(self, batch: GraphBatch) -> tuple[HostText, HostVideo]:
        """The host's caption and video encodings of ``batch`` (host features only)."""
        return (self.host.text(batch.cap_feat, batch.tok_feat, batch.tok_mask),
                self.host.video(batch.frame_feat, batch.frame_mask, batch.patch_feat))

    def host_scores(self, batch: GraphBatch) -> torch.Tensor:
        return self.host.score(*self.host_units(batch))

    def embed(self, batch: GraphBatch, branch: str = "fused") -> tuple[torch.Tensor, torch.Tensor]:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}")
        if not self.config.use_sg or branch == "host":
            text, video = self.host_units(batch)
            video, text = video.pooled, text.pooled
        else:
            video, text, _, _, _ = self._fused(batch)
        return F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)

    def _fused(self, batch: GraphBatch, host: tuple[HostText, HostVideo] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DSGEncoding, tuple[HostText, HostVideo]]:
        """Host + SG video and caption embeddings (not normalised), with the GTrm node states, the DSG
        encoding they came from and the host encodings."""
        host_t, host_v = host or self.host_units(batch)
        nodes, captions = self.gtrm(batch, self.words)
        enc = self.dsg(batch, self.words)
        return (self.video_adapter(host_v.pooled, enc.video), self.text_adapter(host_t.pooled, captions), nodes, enc,
                (host_t, host_v))

    def _units(self, nodes: torch.Tensor, enc: DSGEncoding, batch: GraphBatch) -> tuple[TextUnits, VideoUnits]:
        return self.fine.text_units(nodes, self.node_align, batch), self.fine.video_units(enc, batch)

    @property
    def uses_fine_grained(self) -> bool:
        return self.config.use_sg and self.config.fine_grained_weight > 0

    def retrieval_units(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, TextUnits, VideoUnits]:
        """Fused pooled embeddings (as ``embed(batch, "fused")``) and the fine-grained units of the batch."""
        video, text, nodes, enc, _ = self._fused(batch)
        return (F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1), *self._units(nodes, enc, batch))

    def fine_scores(self, text: TextUnits, video: VideoUnits) -> torch.Tensor:
        """``fine_grained_weight × fine(c, v)`` for every caption of ``text`` and video of ``video``: ``[C, B]``,
        to be added to the pooled cosine."""
        return self.config.fine_grained_weight * self.fine.scores(text, video, self.dsg, self._stgd_kernel())

    @property
    def uses_video_side(self) -> bool:
        return self.uses_fine_grained and self.config.video_side_weight > 0

    def caption_units(self, batch: GraphBatch) -> TextUnits:
        """The object/relation units of every caption's TSG (GTrm → ``node_align``): the text side of the
        fine-grained and the video-side scores, read from the TSG alone."""
        nodes, _ = self.gtrm(batch, self.words)
        return self.fine.text_units(nodes, self.node_align, batch)

    def video_side_scores(self, text: TextUnits, host_t: HostText, host_v: HostVideo) -> torch.Tensor:
        """``[C, B]`` video-side SG-free scores: the host's pooled cosine + ``fine_grained_weight`` × the mean
        over each caption's TSG object/relation units (``text``) of their best cosine with the video's host
        slots (through the slot head of the representation distillation); with ``slot_unit_weight`` the
        slots' window units and, for relation nodes, their directed pairs over the caption's window instead
        (:mod:`finsta_model.slot_units`). No scene graph of the video is read."""
        raw = self.rep_heads["slot"](host_v.slot_states)
        places = slot_places(host_v) if self.config.slot_unit_weight else None
        slots = F.normalize(raw.float(), dim=-1) if places is None else None                      # [B, S, d]
        video = F.normalize(host_v.pooled.float(), dim=-1)
        rows = []
        for lo in range(0, max(len(text), 1), SCORE_ROWS):
            part = text.slice(lo, lo + SCORE_ROWS)
            if places is None:
                best = torch.einsum("cud,bsd->cubs", part.align.float(), slots).amax(-1)       # [C, U, B]
            else:
                best = self.slot_units.node_scores(part, *self.slot_units.units(raw, places, part.window))
            units = (part.is_object | part.is_relation).float()[..., None]
            fine = (best * units).sum(1) / units.sum(1).clamp_min(1)
            pooled = F.normalize(host_t.pooled[lo:lo + SCORE_ROWS].float(), dim=-1) @ video.T
            rows.append(pooled + self.config.fine_grained_weight * fine)
        return torch.cat(rows) if rows else video.new_zeros((0, len(video)))

    def _stgd_kernel(self):
        return self.dsg.stgd[0].kernel if self.dsg.stgd is not None and len(self.dsg.stgd) else None

    # ------------------------------------------------------------ losses
    def _host_nce(self, batch: GraphBatch, host_t: HostText, host_v: HostVideo) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE + hard-negative ranking on the host's own score; returns (loss, the score matrix)."""
        cfg = self.config
        video, text = F.normalize(host_v.pooled, dim=-1), F.normalize(host_t.pooled, dim=-1)
        late = cfg.host_fine_weight * self.host.late(host_t, host_v) if cfg.host_fine_weight else None
        nce = video_text_nce(video, text, batch.cap_video, batch.cap_neg_of, cfg.temperature, late)
        scores = text.float() @ video.float().T + (late if late is not None else 0)
        return nce, scores

    def encode(self, batch: GraphBatch) -> "Encodings":
        """What the losses read of ``batch`` that parameters compute: the host's encodings and, with the SG
        branch, the fused embeddings (not normalised), GTrm node states and the DSG encoding."""
        host = self.host_units(batch)
        if not self.config.use_sg:
            return Encodings(*host)
        video, text, nodes, enc, _ = self._fused(batch, host)
        return Encodings(*host, video=video, text=text, nodes=nodes, dsg=enc)

    def losses(self, batch: GraphBatch, gather: "Gather | None" = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of ``batch`` and its detached parts. With ``gather`` (a data-parallel
        replica) the loss is that of every replica's batch together: this replica encodes its own batch,
        the losses run on the gathered batch and encodings (:mod:`finsta_model.gather`)."""
        encodings = local = self.encode(batch)
        video_only = batch.video_only
        if gather is not None:
            batch, encodings = gather.batch(batch), encodings.gathered(gather)
        total, parts = self.objective(batch, encodings)
        if self.config.uncaptioned:   # the batch's videos without captions: representation distillation only
            rep = self.uncaptioned_distillation(video_only, gather, local)
            rep = rep if rep is not None else total.new_zeros(())
            total = total + self.config.rep_distill_weight * rep
            parts["rep_uncaptioned"], parts["total"] = rep.detach(), total.detach()
        return total, parts

    def uncaptioned_distillation(self, batch: Optional[GraphBatch], gather: "Gather | None" = None,
                                 like: Optional[Encodings] = None) -> Optional[torch.Tensor]:
        """:meth:`_rep_distill` on a batch of videos without captions (``batch.video_only``): the host's
        video encodings against their DSG encodings, the teacher held fixed (computed without gradient).
        None when there are none. With ``gather`` (a data-parallel replica) the term is that of every
        replica's such videos together, as one process computes it; a replica without any hands the
        others' gathers zero videos shaped ``like`` its own batch's encodings."""
        host_v = enc = None
        if batch is not None:
            host_v = self.host.video(batch.frame_feat, batch.frame_mask, batch.patch_feat)
            with torch.no_grad():
                enc = self.dsg(batch, self.words)
        if gather is not None:
            batch = gather.batch_or_none(batch, like.host_video.pooled.device)
            if batch is None:              # no replica has any: the same answer on every rank
                return None
            if host_v is None:
                host_v, enc = no_videos(like.host_video, like.dsg)
            host_v, enc = gathered_host_video(host_v, gather), gathered_dsg(enc, gather)
        if batch is None:
            return None
        return self._rep_distill(batch, host_v, enc)

    def objective(self, batch: GraphBatch, encodings: "Encodings") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of ``batch`` from its :meth:`encode` output (see the module docstring)."""
        cfg, tau = self.config, self.config.temperature
        host_t, host_v = encodings.host_text, encodings.host_video
        host_nce, host_scores = self._host_nce(batch, host_t, host_v)
        box, match = self._slot_boxes(batch, host_v) if cfg.slot_box_weight else (None, None)
        if not cfg.use_sg:   # the host is the model (with slot_box_weight: boxes at training time, no teacher)
            parts = {"nce": host_nce.detach()}
            if box is not None:
                host_nce = host_nce + cfg.slot_box_weight * box
                parts["slot_box"] = box.detach()
            return host_nce, {**parts, "total": host_nce.detach()}
        video, text, nodes, enc = encodings.video, encodings.text, encodings.nodes, encodings.dsg
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
        extra = None
        if self.uses_fine_grained:
            text_units, video_units = self._units(nodes, enc, batch)
            units = self.fine.window_units(text_units.window, video_units, self.dsg, self._stgd_kernel())
            node_scores = self.fine.node_scores(text_units, video_units, *units)
            unit_mask = (text_units.is_object | text_units.is_relation).float()[..., None]
            extra = cfg.fine_grained_weight * (node_scores * unit_mask).sum(1) / unit_mask.sum(1).clamp_min(1)
        nce = video_text_nce(video, text, batch.cap_video, batch.cap_neg_of, tau, extra)
        total = nce + host_nce
        parts = {"nce": nce.detach(), "host_nce": host_nce.detach()}
        if box is not None:
            total = total + cfg.slot_box_weight * box
            parts["slot_box"] = box.detach()
        aligned = F.normalize(self.node_align(nodes), dim=-1)
        if cfg.use_osc:
            if self.uses_fine_grained:
                osc = unit_osc(text_units, video_units, units[0], batch, tau)
            else:
                osc = object_spatial_contrast(aligned, F.normalize(enc.tracks, dim=-1), batch.link_node,
                                              batch.link_track, tau)
            total = total + cfg.osc_weight * osc
            parts["osc"] = osc.detach()
        if cfg.use_ptc:
            ptc = self._ptc(batch, aligned, enc)
            if self.uses_fine_grained:
                ptc = ptc + unit_ptc(text_units, video_units, units[0], units[1], batch, tau)
            total = total + cfg.ptc_weight * ptc
            parts["ptc"] = ptc.detach()
        # the host learns from the SG branch (the teacher is held fixed for these terms)
        tau_d = cfg.distill_temperature or tau
        distill = distillation(F.normalize(host_v.pooled, dim=-1), video) \
            + distillation(F.normalize(host_t.pooled, dim=-1), text)
        total = total + cfg.distill_weight * distill
        parts["distill"] = distill.detach()
        if cfg.score_distill_weight:
            teacher = text.detach() @ video.detach().T + (extra.detach() if extra is not None else 0)
            score = score_distillation(host_scores, teacher, batch.cap_video, batch.cap_neg_of, tau_d)
            total = total + cfg.score_distill_weight * score
            parts["score_distill"] = score.detach()
        if cfg.node_distill_weight and self.uses_fine_grained:
            node = node_distillation(node_scores, host_t, host_v, batch, tau_d)
            total = total + cfg.node_distill_weight * node
            parts["node_distill"] = node.detach()
        if cfg.align_distill_weight and self.uses_fine_grained:
            align = phrase_alignment(text_units, video_units, units[0].detach(), units[1].detach(), host_t, host_v,
                                     batch, tau)
            total = total + cfg.align_distill_weight * align
            parts["align_distill"] = align.detach()
        if cfg.rep_distill_weight:
            rep = self._rep_distill(batch, host_v, enc, match)
            total = total + cfg.rep_distill_weight * rep
            parts["rep_distill"] = rep.detach()
        if self.uses_video_side:
            fixed = TextUnits(**{**vars(text_units), "align": text_units.align.detach(),
                                 "pair": text_units.pair.detach()})                           # the teacher stays
            scores = self.video_side_scores(fixed, host_t, host_v)
            pooled = F.normalize(host_t.pooled.float(), dim=-1) @ F.normalize(host_v.pooled.float(), dim=-1).T
            side = video_text_nce(F.normalize(host_v.pooled, dim=-1), F.normalize(host_t.pooled, dim=-1),
                                  batch.cap_video, batch.cap_neg_of, tau, scores - pooled)
            total = total + cfg.video_side_weight * side
            parts["video_side"] = side.detach()
            if cfg.slot_unit_weight:
                units = self._slot_units(batch, host_v, fixed, enc, match)
                total = total + cfg.slot_unit_weight * units
                parts["slot_units"] = units.detach()
        parts["total"] = total.detach()
        return total, parts

    def _slot_boxes(self, batch: GraphBatch, host_v: HostVideo
                    ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]]]:
        """The box supervision of the host's slots (:func:`slot_boxes`) and its slot↔track pairs (None
        without cells: the term is then zero)."""
        if host_v.cells == 0:
            return host_v.pooled.new_zeros((), dtype=torch.float32), None
        local, _ = track_slots(batch)
        footprints = track_footprints(batch, host_v.cells, host_v.frame_index)
        loss, slot_rows, track_rows = slot_boxes(host_v.slot_attention, footprints, batch.track_video, local)
        return loss, (slot_rows, track_rows)

    def _slot_units(self, batch: GraphBatch, host_v: HostVideo, text: TextUnits, enc: DSGEncoding,
                    match: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """:func:`slot_unit_contrast` on the batch: slots matched to tracks by the box supervision's pairs
        (``match``) or, without it, by cosine with the DSG's track embeddings."""
        raw = self.rep_heads["slot"](host_v.slot_states)
        if match is None:
            match = match_slots(raw, enc.tracks, batch.track_video)
        return slot_unit_contrast(self.slot_units, raw, slot_places(host_v), text, batch, match,
                                  self.config.temperature)

    def _rep_distill(self, batch: GraphBatch, host_v: HostVideo, enc: DSGEncoding,
                     match: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """The host's video embedding, frame tokens and slots vs the DSG's video, frame and track embeddings
        (:func:`representation_distillation`; ``match``: slot↔track pairs, e.g. the box supervision's, instead
        of its cosine matching); the teacher is held fixed."""
        heads, tau = self.rep_heads, self.config.temperature
        b = len(host_v)
        frame_tokens = host_v.tokens.view(b, -1, 1 + host_v.cells, host_v.tokens.shape[-1])[:, :, 0]   # [B, T, d]
        index = host_v.frame_index
        index = index[None].expand(b, -1) if index.dim() == 1 else index                  # [B, T], -1 = padding
        seen = index >= 0
        frame_ok = seen & batch.frame_mask.gather(1, index.clamp_min(0))
        teacher_frames = enc.frames.gather(1, index.clamp_min(0)[..., None].expand(-1, -1, enc.frames.shape[-1]))
        slots = None if host_v.slot_states is None else heads["slot"](host_v.slot_states)
        return representation_distillation(
            heads["video"](host_v.pooled), enc.video, heads["frame"](frame_tokens)[frame_ok],
            teacher_frames[frame_ok], slots, enc.tracks, batch.track_video, tau, match)

    def _ptc(self, batch: GraphBatch, aligned: torch.Tensor, enc: DSGEncoding) -> torch.Tensor:
        """Predicate nodes of real captions vs true / shifted / other-video windows."""
        real_cap = batch.cap_neg_of < 0
        pick = (batch.node_kind == RELATION_KIND) & real_cap[batch.node_cap]
        if not pick.any():
            return aligned.new_zeros(())
        cap = batch.node_cap[pick]
        video = batch.cap_video[cap]
        first, last = batch.cap_window[cap, 0], batch.cap_window[cap, 1]
        length = last - first + 1
        n_frames = batch.frame_mask.long().sum(1)
        b = batch.num_videos
        videos, firsts, lasts, valids = [video], [first], [last], [torch.ones_like(pick[pick])]
        for shift in self.config.ptc_shifts:
            delta = torch.round(shift * length.float()).long()
            delta = torch.where(delta == 0, torch.full_like(delta, 1 if shift > 0 else -1), delta)
            f2, l2 = first + delta, last + delta
            valids.append((f2 >= 0) & (l2 <= n_frames[video] - 1))
            videos.append(video)
            firsts.append(f2.clamp(0, batch.num_frames - 1))
            lasts.append(l2.clamp(0, batch.num_frames - 1))
        for other in range(b):
            top = (n_frames[other] - 1).clamp_min(0)
            videos.append(torch.full_like(video, other))
            firsts.append(torch.minimum(first, top))
            lasts.append(torch.minimum(last, top))
            valids.append(video != other)
        p, s = video.shape[0], len(videos)
        windows = self.dsg.windows(enc, torch.cat(videos), torch.cat(firsts), torch.cat(lasts))
        candidates = F.normalize(windows.view(s, p, -1).transpose(0, 1), dim=-1)
        valid = torch.stack(valids, dim=1)
        return predicate_temporal_contrast(aligned[pick], candidates, valid, self.config.temperature)
