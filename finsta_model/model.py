"""FinstaModel: host path + SG branch (GTrm, R-GTrm, STGD) + adapters + student, and its losses.

``embed(batch, branch)`` gives L2-normalised video and caption embeddings:

* ``"fused"`` — host + adapter(SG): the Finsta-augmented embedding;
* ``"student"`` — the distilled student (host features only, no scene graphs);
* ``"host"`` — the host path alone.

With ``config.use_sg = False`` (the host-only baseline) there is no SG branch
and every branch is the host.

Example::

    model = FinstaModel(TrainConfig(), dims=dataset.manifest["feature_dims"])
    loss, parts = model.losses(batch)   # parts: detached scalars {"nce", "osc", "ptc", "distill", "total"}
    video, text = model.embed(batch, "fused")
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finsta_model.adapter import HostEncoder, SGAdapter, Student
from finsta_model.config import TrainConfig
from finsta_model.fine_grained import FineGrained, TextUnits, VideoUnits, unit_osc, unit_ptc
from finsta_model.graphs import GraphBatch
from finsta_model.gtrm import GTrm
from finsta_model.losses import (distillation, object_spatial_contrast, predicate_temporal_contrast,
                                 video_text_nce)
from finsta_model.rgtrm import DSGEncoder, DSGEncoding
from schemas.records import TEXT_NODE_KINDS

BRANCHES = ("fused", "student", "host")
RELATION_KIND = TEXT_NODE_KINDS.index("relation")


class FinstaModel(nn.Module):
    def __init__(self, config: TrainConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        d = config.dim
        self.host = HostEncoder(dims["frame"], dims["caption"], d)
        if not config.use_sg:
            return
        self.words = nn.Embedding(config.label_buckets, d, padding_idx=0)
        self.gtrm = GTrm(dims["text_node"], d, config.heads, config.gtrm_layers, config.dropout)
        self.dsg = DSGEncoder(dims["detection"], d, config.heads, config.rgtrm_layers, config.dropout,
                              use_stgd=config.use_stgd)
        self.video_adapter = SGAdapter(d, config.dropout)
        self.text_adapter = SGAdapter(d, config.dropout)
        self.node_align = nn.Linear(d, d)
        self.student = Student(dims["frame"], dims["caption"], d, config.heads, config.dropout)
        if config.fine_grained_weight > 0:
            self.fine = FineGrained(d, stgd_heads=config.heads if config.use_stgd else 0)

    # ------------------------------------------------------------ embeddings
    def embed(self, batch: GraphBatch, branch: str = "fused") -> tuple[torch.Tensor, torch.Tensor]:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}")
        if not self.config.use_sg or branch == "host":
            video, text = self.host.video(batch.frame_feat, batch.frame_mask), self.host.text(batch.cap_feat)
        elif branch == "student":
            video = self.student.video(batch.frame_feat, batch.frame_mask)
            text = self.student.text(batch.cap_feat)
        else:
            video, text, _, _ = self._fused(batch)
        return F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)

    def _fused(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DSGEncoding]:
        """Host + SG video and caption embeddings (not normalised), with the GTrm node states and the DSG
        encoding they came from."""
        host_v = self.host.video(batch.frame_feat, batch.frame_mask)
        host_t = self.host.text(batch.cap_feat)
        nodes, captions = self.gtrm(batch, self.words)
        enc = self.dsg(batch, self.words)
        return self.video_adapter(host_v, enc.video), self.text_adapter(host_t, captions), nodes, enc

    def _units(self, nodes: torch.Tensor, enc: DSGEncoding, batch: GraphBatch) -> tuple[TextUnits, VideoUnits]:
        return self.fine.text_units(nodes, self.node_align, batch), self.fine.video_units(enc, batch)

    @property
    def uses_fine_grained(self) -> bool:
        return self.config.use_sg and self.config.fine_grained_weight > 0

    def retrieval_units(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, TextUnits, VideoUnits]:
        """Fused pooled embeddings (as ``embed(batch, "fused")``) and the fine-grained units of the batch."""
        video, text, nodes, enc = self._fused(batch)
        return (F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1), *self._units(nodes, enc, batch))

    def fine_scores(self, text: TextUnits, video: VideoUnits) -> torch.Tensor:
        """``fine_grained_weight × fine(c, v)`` for every caption of ``text`` and video of ``video``: ``[C, B]``,
        to be added to the pooled cosine."""
        return self.config.fine_grained_weight * self.fine.scores(text, video, self.dsg, self._stgd_kernel())

    def _stgd_kernel(self):
        return self.dsg.stgd[0].kernel if self.dsg.stgd is not None and len(self.dsg.stgd) else None

    # ------------------------------------------------------------ losses
    def losses(self, batch: GraphBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, tau = self.config, self.config.temperature
        if not cfg.use_sg:
            host_v = self.host.video(batch.frame_feat, batch.frame_mask)
            host_t = self.host.text(batch.cap_feat)
            nce = video_text_nce(F.normalize(host_v, dim=-1), F.normalize(host_t, dim=-1), batch.cap_video,
                                 batch.cap_neg_of, tau)
            return nce, {"nce": nce.detach()}
        video, text, nodes, enc = self._fused(batch)
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
        extra = None
        if self.uses_fine_grained:
            text_units, video_units = self._units(nodes, enc, batch)
            units = self.fine.window_units(text_units.window, video_units, self.dsg, self._stgd_kernel())
            extra = cfg.fine_grained_weight * self.fine.combine(text_units, video_units, *units)
        nce = video_text_nce(video, text, batch.cap_video, batch.cap_neg_of, tau, extra)
        total = nce
        parts = {"nce": nce.detach()}
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
        s_video = F.normalize(self.student.video(batch.frame_feat, batch.frame_mask), dim=-1)
        s_text = F.normalize(self.student.text(batch.cap_feat), dim=-1)
        distill = distillation(s_video, video) + distillation(s_text, text) \
            + video_text_nce(s_video, s_text, batch.cap_video, batch.cap_neg_of, tau)
        total = total + cfg.distill_weight * distill
        parts["distill"] = distill.detach()
        parts["total"] = total.detach()
        return total, parts

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
