"""graphs.py: the phrase ↔ token pairs that align host tokens with TSG nodes, and host feature padding."""
from __future__ import annotations

import numpy as np

from finsta_model.graphs import pad_patches, pad_tokens, phrase_members, phrase_token_pairs
from schemas.records import TEXT_EDGE_KINDS, TEXT_NODE_KINDS


def test_phrase_pairs_by_hand():
    # "the red cube approaches the ball slowly"
    #  0   4   8    13         24  28   33
    kind = np.array([TEXT_NODE_KINDS.index(k) for k in ("object", "attribute", "relation", "object",
                                                        "pred_attribute")])
    span = np.array([[8, 12], [4, 7], [13, 23], [28, 32], [33, 39]])
    edges = [(0, 1, "obj_attr"), (0, 2, "subj_pred"), (2, 3, "pred_obj"), (2, 4, "pred_adv")]
    src, dst = np.array([e[0] for e in edges]), np.array([e[1] for e in edges])
    ekind = np.array([TEXT_EDGE_KINDS.index(e[2]) for e in edges])
    head, member = phrase_members(kind, src, dst, ekind)
    assert sorted(zip(head.tolist(), member.tolist())) == [(0, 0), (0, 1), (2, 2), (2, 4), (3, 3)]
    # tokens: [CLS] the red cube approach ##es the ball slowly [SEP]
    tokens = np.array([[0, 0], [0, 3], [4, 7], [8, 12], [13, 21], [21, 23], [24, 27], [28, 32], [33, 39], [0, 0]])
    node, token = phrase_token_pairs(head, np.zeros(len(head), int), span[member], np.zeros(len(tokens), int),
                                     tokens)
    assert list(zip(node.tolist(), token.tolist())) == [(0, 2), (0, 3), (2, 4), (2, 5), (2, 8), (3, 7)]
    # two captions: pairs never cross captions
    node, token = phrase_token_pairs(np.array([0]), np.array([1]), np.array([[0, 3]]), np.array([0, 0, 1, 1]),
                                     np.array([[0, 3], [4, 5], [0, 0], [0, 3]]))
    assert node.tolist() == [0] and token.tolist() == [3]


def test_padding_host_features():
    feat, mask = pad_tokens([np.ones((2, 3)), None, np.ones((4, 3))], 3)
    assert feat.shape == (3, 4, 3) and mask.sum(1).tolist() == [2, 0, 4] and feat[0, 2:].sum() == 0
    cells = pad_patches([np.ones((2, 4, 5)), np.ones((3, 4, 5))], 3, 5)
    assert cells.shape == (2, 3, 4, 5) and cells[0, 2].sum() == 0
    assert pad_patches([np.zeros((2, 0, 5))], 2, 5).shape == (1, 2, 0, 5)
