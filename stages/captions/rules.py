"""Dependency parse (internal, ClearNLP-style form) → textual scene graph.

The rules, in the order they run (each names the labels it reads):

* **Objects**: every noun (``NOUN``/``PROPN``) that is not itself a
  ``compound`` modifier; its ``compound`` children prefix its label ("tree
  trunk"). Quantity heads ("a group of people", "a bunch of birds") give way to
  the noun after "of"; "group"/"piece"/"part"/"slice" stay as its attribute, as
  FACTUAL annotates them. Pronouns "it/they/them/he/she…" resolve to an
  earlier object (the nearest compatible one, never the clause's own subject);
  unresolved pronouns are dropped.
* **Attributes** (``obj_attr``): ``amod`` adjectives and participles with their
  adverb/degree modifiers ("partly cloudy", "dark green"), ``conj``-joined
  adjectives, material/colour nouns used as ``compound`` modifiers ("metal
  poles"), ``nummod`` numbers (as digits; they also set ``TextNode.count``),
  and copular predicates ("the car is red": ``acomp``/``attr`` under "be").
* **Relations** (``subj_pred``/``pred_obj``): a verb's subjects are its
  ``nsubj``/``nsubjpass``, the noun it modifies (``acl``, ``relcl``), or those
  of the verb it is coordinated with or complements (``conj``, ``xcomp``,
  ``advcl``). Its objects are ``dobj``/``attr`` nouns (predicate: the verb with
  its particle, "pick up") and ``prep`` objects (predicate: verb + preposition,
  "sit on"; multi-word prepositions "on top of", "in front of", "out of" are
  joined). A passive's ``agent`` ("surrounded by grass") becomes the subject.
  Copular "be" contributes no word ("the cat is on the mat" → "on"); "there
  is X on Y" → (X, on, Y). A noun's ``prep`` gives (noun, prep, object), "X of
  Y" gives (Y, have, X) and "Y's X" gives (Y, have, X).
* **Coordination**: ``conj`` of a subject or object repeats the edge
  ("a man and a woman sit on a bench" → two ``subj_pred`` edges).
* **Predicate attributes** (``pred_adv``): ``advmod`` adverbs of a verb that has
  a relation node ("runs quickly"), except wh-words, negation and place words
  that FACTUAL reads as scene context ("there", "here").

Entry point: :func:`build_tsg`.
"""
from __future__ import annotations

from typing import Optional

from schemas.records import TextEdge, TextNode, TextSceneGraph
from stages.captions.depparse import ParsedDoc, Token

NOUN_POS = ("NOUN", "PROPN")
#: "a <quantity> of X" → X. Values: the attribute FACTUAL keeps (or None).
QUANTITY_NOUNS = {
    "group": "group of", "piece": "piece", "part": "part", "slice": "slice",
    "bunch": None, "bits": None, "bit": None, "stack": None, "pile": None, "row": None,
    "lot": None, "lots": None, "herd": None, "flock": None, "pair": None, "couple": None,
    "number": None, "set": None, "variety": None, "collection": None, "cluster": None,
    "bundle": None, "handful": None, "plenty": None, "kind": None, "type": None, "line": None,
    "crowd": None, "team": None, "school": None, "array": None, "assortment": None,
    "series": None, "stream": None, "batch": None, "patch": None, "clump": None,
    "cluster": None, "mass": None, "sea": None, "swarm": None, "fleet": None, "litter": None,
    "stand": None, "grove": None, "selection": None, "ton": None, "tons": None,
}
#: Nouns that with "of" form a spatial preposition: "on top of", "in front of".
RELATIONAL_NOUNS = {"top", "side", "front", "middle", "edge", "corner", "back", "left", "right",
                    "end", "bottom", "center", "centre", "rear", "base", "inside", "outside",
                    "surface", "tip", "part"}
#: Nouns that, used as a compound modifier, FACTUAL writes as an attribute.
ATTRIBUTE_NOUNS = {
    "metal", "wood", "leather", "plastic", "glass", "stone", "brick", "steel", "iron", "concrete",
    "cement", "cloth", "cotton", "wool", "denim", "silver", "gold", "rubber", "ceramic", "marble",
    "straw", "wicker", "porcelain", "chrome", "aluminum", "bamboo", "fur", "silk", "velvet", "lace",
    "cardboard", "tin", "copper", "brass", "granite", "vinyl", "canvas", "clay", "orange", "pink",
    "tan", "beige", "maroon", "navy", "khaki", "teal", "purple", "turquoise", "gray", "grey",
    "white", "black", "brown", "red", "blue", "green", "yellow", "gold", "striped", "polka",
    "tile", "laptop", "wire", "mesh", "paper", "foam", "felt", "suede", "bronze",
}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
                "fourteen": 14, "fifteen": 15, "twenty": 20, "both": 2, "pair": 2, "dozen": 12}
PERSON_NOUNS = {"man", "woman", "person", "boy", "girl", "child", "kid", "guy", "lady", "player",
                "skier", "surfer", "skateboarder", "snowboarder", "rider", "batter", "catcher",
                "pitcher", "people", "men", "women", "baby", "adult", "gentleman", "tennis player",
                "chef", "cook", "worker", "officer", "driver", "passenger", "athlete"}
PRONOUNS = {"it": "thing", "its": None, "they": "plural", "them": "plural", "he": "person",
            "him": "person", "she": "person", "her": "person", "this": "thing", "that": "thing",
            "these": "plural", "those": "plural", "itself": "thing", "themselves": "plural"}
RELATIVE_PRONOUNS = {"that", "which", "who", "whom", "whose", "where"}
SKIP_ADVERBS = {"there", "here", "not", "n't", "never", "also", "too", "very", "so", "then",
                "where", "when", "how", "why", "just", "only", "as", "even", "still", "again"}
ATTR_MODIFIER_LABELS = ("advmod", "npadvmod", "amod", "compound")
VERB_POS = ("VERB", "AUX")
COPULAS = {"be"}


class _Builder:
    def __init__(self, doc: ParsedDoc):
        self.doc = doc
        self.t = doc.tokens
        self.nodes: list[TextNode] = []
        self.edges: list[TextEdge] = []
        self.obj_node: dict[int, int] = {}     # entity head token → node id
        self.alias: dict[int, int] = {}        # token → token it stands for (quantities, pronouns)
        self.verb_rel: dict[int, list[int]] = {}
        self.edge_keys: set[tuple[int, int, str]] = set()

    # -------------------------------------------------------------- helpers
    def kids(self, i: int, *labels: str) -> list[int]:
        return [k for k in self.doc.children(i) if not labels or self.t[k].label in labels]

    def add_node(self, kind: str, label: str, lemma: str, span: tuple[int, int], count: int = 1) -> int:
        self.nodes.append(TextNode(len(self.nodes), kind, label, lemma, span, count))
        return len(self.nodes) - 1

    def add_edge(self, src: int, dst: int, kind: str) -> None:
        if src != dst and (src, dst, kind) not in self.edge_keys:
            self.edge_keys.add((src, dst, kind))
            self.edges.append(TextEdge(src, dst, kind))

    def is_noun(self, i: int) -> bool:
        tok = self.t[i]
        return tok.pos in NOUN_POS and tok.label != "compound" or (
            tok.pos in ("NUM", "ADJ", "X") and tok.label in ("nsubj", "nsubjpass", "dobj", "pobj")
            and tok.tag in ("NN", "NNS", "NNP"))

    def conjuncts(self, i: int) -> list[int]:
        """``i`` and the words coordinated with it (``conj`` chains)."""
        out, stack = [], [i]
        while stack:
            j = stack.pop()
            if j in out:
                continue
            out.append(j)
            stack.extend(self.kids(j, "conj"))
        return sorted(out)

    # -------------------------------------------------------------- entities
    def resolve(self, i: int) -> Optional[int]:
        """The entity head token that token ``i`` stands for, or None."""
        seen = set()
        while i in self.alias and i not in seen:
            seen.add(i)
            i = self.alias[i]
        return i if i in self.obj_node else None

    def find_entities(self) -> None:
        t = self.t
        for tok in t:
            if not self.is_noun(tok.i):
                continue
            low = tok.text.lower()
            ofs = [k for k in self.kids(tok.i, "prep") if t[k].text.lower() == "of"]
            if low in QUANTITY_NOUNS and ofs:
                inner = [k for k in self.kids(ofs[0], "pobj") if self.is_noun(k)]
                if inner:
                    self.alias[tok.i] = inner[0]
                    continue
            if low in RELATIONAL_NOUNS and ofs and tok.label == "pobj":
                continue  # part of a multi-word preposition, see prep_phrase
            if self.predicate_nominal(tok.i):
                continue  # "the egg is a sculpture": an attribute, see copular_attribute
            self.obj_node[tok.i] = -1
        for tok in t:
            if tok.pos == "PRON" and tok.text.lower() in PRONOUNS and tok.label not in ("poss",):
                target = self.antecedent(tok.i)
                if target is not None:
                    self.alias[tok.i] = target
        for i in sorted(self.obj_node):
            self.obj_node[i] = self.make_object(i)
        for src, dst in list(self.alias.items()):
            head = QUANTITY_NOUNS.get(self.t[src].text.lower())
            target = self.resolve(dst)
            if head and target is not None and self.t[src].pos in NOUN_POS:
                self.add_attribute(self.obj_node[target], head, head, (self.t[src].start, self.t[src].end))

    def predicate_nominal(self, i: int) -> bool:
        tok = self.t[i]
        if tok.label != "attr" or self.t[tok.head].lemma.lower() not in COPULAS:
            return False
        subj = self.kids(tok.head, "nsubj")
        return bool(subj) and self.t[subj[0]].pos in NOUN_POS

    def antecedent(self, i: int) -> Optional[int]:
        kind = PRONOUNS[self.t[i].text.lower()]
        if kind is None:
            return None
        own_subjects = set()
        verb = self.t[i].head
        for hop in range(3):  # the clause's own subject is never its object's antecedent
            own_subjects.update(self.kids(verb, "nsubj", "nsubjpass"))
            if self.t[verb].label in ("acl", "relcl"):
                own_subjects.add(self.t[verb].head)
            verb = self.t[verb].head
        candidates = [j for j in self.obj_node if j < i and j not in own_subjects
                      and self.t[j].pos in NOUN_POS]
        if kind == "person":
            candidates = [j for j in candidates if self.t[j].lemma.lower() in PERSON_NOUNS]
        elif kind == "plural":
            plural = [j for j in candidates if self.t[j].tag in ("NNS", "NNPS")]
            candidates = plural or candidates
        if not candidates and self.t[i].label in ("nsubj", "nsubjpass"):
            return None
        return max(candidates) if candidates else None

    def make_object(self, i: int) -> int:
        tok = self.t[i]
        parts = [i]
        stack = list(self.kids(i, "compound"))
        while stack:
            k = stack.pop()
            if self.t[k].text.lower() in ATTRIBUTE_NOUNS and self.t[k].pos in NOUN_POS + ("ADJ",):
                continue
            parts.append(k)
            stack.extend(self.kids(k, "compound"))
        parts = [p for p in sorted(parts) if self.t[p].pos not in ("PUNCT",)]
        # keep only the contiguous run that ends at the head
        run = [i]
        for p in reversed(parts[:-1]):
            if p == run[0] - 1 or (self.t[run[0] - 1].pos == "PUNCT" and p == run[0] - 2):
                run.insert(0, p)
        label = " ".join(self.t[p].text.lower() for p in run)
        lemma = " ".join(self.t[p].lemma.lower() for p in run)
        count = 1
        for k in self.kids(i, "nummod"):
            value = number_value(self.t[k].text)
            if value:
                count = value
        return self.add_node("object", label, lemma, (self.t[run[0]].start, tok.end), count)

    # -------------------------------------------------------------- attributes
    def add_attribute(self, obj: int, label: str, lemma: str, span: tuple[int, int]) -> None:
        for e in self.edges:
            if e.src == obj and e.kind == "obj_attr" and self.nodes[e.dst].lemma == lemma:
                return
        node = self.add_node("attribute", label, lemma, span)
        self.add_edge(obj, node, "obj_attr")

    def attribute_phrase(self, i: int) -> tuple[str, str, tuple[int, int]]:
        """An adjective with its degree words: ("dark green", "dark green", span)."""
        mods = [k for k in self.kids(i, *ATTR_MODIFIER_LABELS)
                if k < i and self.t[k].text.lower() not in ("very", "so", "too", "really", "more", "most")
                and self.t[k].pos in ("ADV", "ADJ", "NOUN")]
        words = sorted(mods + [i])
        words = [w for w in words if w >= i - 2]
        label = " ".join(self.t[w].text.lower() for w in words)
        lemma = " ".join(self.t[w].text.lower() if w != i else self.adj_lemma(w) for w in words)
        return label, lemma, (self.t[words[0]].start, self.t[i].end)

    def adj_lemma(self, i: int) -> str:
        tok = self.t[i]
        return tok.text.lower() if tok.pos in ("ADJ", "VERB") else tok.lemma.lower()

    def collect_attributes(self) -> None:
        t = self.t
        for head, node in list(self.obj_node.items()):
            for k in self.doc.children(head):
                tok = t[k]
                if tok.label == "amod" or (tok.label == "compound" and tok.text.lower() in ATTRIBUTE_NOUNS):
                    for c in self.conjuncts(k):
                        if t[c].pos in ("ADJ", "VERB", "NOUN", "PROPN", "ADV") and t[c].text.isalpha():
                            label, lemma, span = self.attribute_phrase(c)
                            self.add_attribute(node, label, lemma, span)
                elif tok.label == "nummod":
                    value = number_value(tok.text)
                    if value and value > 1:
                        self.add_attribute(node, tok.text.lower(), str(value), (tok.start, tok.end))
                elif tok.label == "det" and tok.text.lower() == "both":
                    self.add_attribute(node, "both", "2", (tok.start, tok.end))

    # -------------------------------------------------------------- relations
    def entities_of(self, i: int) -> list[int]:
        """Object nodes for token ``i`` and its conjuncts (quantities and pronouns resolved)."""
        out = []
        for c in self.conjuncts(i):
            target = self.resolve(c)
            if target is not None:
                out.append(self.obj_node[target])
        return out

    def relation(self, subjects: list[int], pred_tokens: list[int], objects: list[int],
                 lemma: Optional[str] = None, verb: Optional[int] = None) -> Optional[int]:
        if not subjects:
            return None
        pred_tokens = sorted(set(pred_tokens))
        label = " ".join(self.t[p].text.lower() for p in pred_tokens)
        if lemma is None:
            lemma = " ".join(self.pred_lemma(p) for p in pred_tokens)
        if not lemma:
            return None
        span = (self.t[pred_tokens[0]].start, self.t[pred_tokens[-1]].end) if pred_tokens else (0, 0)
        node = self.add_node("relation", label or lemma, lemma, span)
        for s in subjects:
            self.add_edge(s, node, "subj_pred")
        for o in objects:
            self.add_edge(node, o, "pred_obj")
        if verb is not None:
            self.verb_rel.setdefault(verb, []).append(node)
        return node

    def pred_lemma(self, i: int) -> str:
        tok = self.t[i]
        if tok.pos in VERB_POS:
            return tok.lemma.lower()
        return tok.text.lower()

    def prep_phrase(self, p: int) -> tuple[list[int], list[int]]:
        """Preposition token → (its words, the noun tokens it governs).

        Joins "out of", "next to", "on top of", "in front of"; a multi-word
        UD preposition keeps its ``fixed`` words.
        """
        words = [p] + self.kids(p, "fixed")
        cur = p
        for _ in range(4):
            objs = self.kids(cur, "pobj", "pcomp")
            inner = [k for k in self.kids(cur, "prep") if not objs]
            if objs:
                noun = objs[0]
                if self.t[noun].text.lower() in RELATIONAL_NOUNS and self.t[noun].i not in self.obj_node:
                    of = [k for k in self.kids(noun, "prep") if self.t[k].text.lower() == "of"]
                    if of:
                        words += [noun, of[0]]
                        cur = of[0]
                        continue
                return words, objs
            if inner:  # "out of the water": out → of → water
                words.append(inner[0])
                cur = inner[0]
                continue
            break
        # "next to": next (advmod/amod) → to (prep)
        return words, []

    def subjects_of_verb(self, v: int, depth: int = 0) -> list[int]:
        t = self.t
        subj = self.kids(v, "nsubj", "nsubjpass", "csubj", "expl")
        out: list[int] = []
        for s in subj:
            if t[s].text.lower() in RELATIVE_PRONOUNS and t[v].label == "relcl":
                out.extend(self.entities_of(t[v].head))
            elif t[s].label == "expl":
                continue
            else:
                out.extend(self.entities_of(s))
        if out or depth > 3:
            return out
        label = t[v].label
        if label in ("acl", "relcl", "amod") and t[v].head != v:
            return self.entities_of(t[v].head)
        if label in ("conj", "xcomp", "advcl", "ccomp", "dep") and t[v].head != v:
            return self.subjects_of_verb(t[v].head, depth + 1)
        if label == "pcomp" and t[v].head != v:  # "a man with a dog sitting ..." rare
            return []
        return out

    def verb_relations(self) -> None:
        t = self.t
        for v in range(len(t)):
            tok = t[v]
            if tok.pos not in VERB_POS and not (tok.pos == "ADJ" and tok.label in ("acl",)):
                continue
            if tok.label in ("aux", "auxpass"):
                continue
            is_copula = tok.lemma.lower() in COPULAS
            passive = bool(self.kids(v, "nsubjpass", "auxpass")) or (
                tok.tag == "VBN" and tok.label in ("acl", "amod"))
            subjects = self.subjects_of_verb(v)
            agents = []
            for a in self.kids(v, "agent"):
                for o in self.kids(a, "pobj"):
                    agents.extend(self.entities_of(o))
            if passive and agents:
                # "bear surrounded by grass" → (grass, surround, bear)
                self.relation(agents, [v], subjects, lemma=tok.lemma.lower(), verb=v)
            if not subjects:
                continue
            particles = self.kids(v, "prt")
            verb_words = [v] + particles
            verb_lemma = " ".join([tok.lemma.lower()] + [t[p].text.lower() for p in particles])
            made = False
            # direct objects
            objs: list[int] = []
            for o in self.kids(v, "dobj", "dative", "oprd"):
                objs.extend(self.entities_of(o))
            if is_copula:
                for a in self.kids(v, "attr", "acomp"):
                    self.copular_attribute(subjects, a)
            elif objs:
                self.relation(subjects, verb_words, objs, lemma=verb_lemma, verb=v)
                made = True
            # prepositional objects
            for p in self.kids(v, "prep") + self.prep_after_advmod(v):
                words, nouns = self.prep_phrase(p)
                pobjs = [e for n in nouns for e in self.entities_of(n)]
                if not pobjs:
                    continue
                prep = " ".join(t[w].text.lower() for w in words)
                if is_copula:
                    self.relation(subjects, words, pobjs, lemma=prep, verb=v)
                elif objs:
                    self.relation(subjects, words, pobjs, lemma=prep, verb=v)
                else:
                    self.relation(subjects, verb_words + words, pobjs, lemma=f"{verb_lemma} {prep}", verb=v)
                made = True
            # "there is a cat on the mat": attr noun is the subject of the prep
            if is_copula and self.kids(v, "expl"):
                for a in self.kids(v, "attr", "nsubj"):
                    for p in self.kids(a, "prep"):
                        pass  # handled as a noun preposition
            if not made and not is_copula:
                self.relation(subjects, verb_words, [], lemma=verb_lemma, verb=v)

    def prep_after_advmod(self, v: int) -> list[int]:
        """"standing next to": next (advmod) → to (prep); returns the ``to``."""
        out = []
        for a in self.kids(v, "advmod"):
            out.extend(self.kids(a, "prep"))
        return out

    def copular_attribute(self, subjects: list[int], a: int) -> None:
        t = self.t
        for c in self.conjuncts(a):
            if c in self.obj_node or c in self.alias:
                continue  # "there is a dog": not an attribute
            if t[c].pos in ("ADJ", "VERB", "NUM", "NOUN", "PROPN", "ADV") and t[c].text.isalpha():
                label, lemma, span = self.attribute_phrase(c)
                for s in subjects:
                    self.add_attribute(s, label, lemma, span)

    def noun_relations(self) -> None:
        t = self.t
        for head in list(self.obj_node):
            subj = self.entities_of_single(head)
            for p in self.kids(head, "prep") + self.prep_after_advmod(head):
                words, nouns = self.prep_phrase(p)
                objs = [e for n in nouns for e in self.entities_of(n)]
                if not objs:
                    continue
                prep = " ".join(t[w].text.lower() for w in words)
                if prep == "of":
                    self.relation(objs, [], [subj], lemma="have")
                else:
                    self.relation([subj], words, objs, lemma=prep)
            for k in self.kids(head, "poss"):
                owners = self.entities_of(k)
                if owners:
                    self.relation(owners, [], [subj], lemma="have")
            # "a man with a hat" handled above; "a sign that says" handled by relcl

    def entities_of_single(self, i: int) -> int:
        return self.obj_node[i]

    def adverbs(self) -> None:
        t = self.t
        for v, rels in self.verb_rel.items():
            for a in self.kids(v, "advmod"):
                tok = t[a]
                if tok.pos != "ADV" or tok.text.lower() in SKIP_ADVERBS or self.kids(a, "prep"):
                    continue
                node = self.add_node("pred_attribute", tok.text.lower(), tok.lemma.lower(),
                                     (tok.start, tok.end))
                self.add_edge(rels[0], node, "pred_adv")


def number_value(word: str) -> int:
    low = word.lower().replace(",", "")
    if low.isdigit():
        return int(low) if len(low) < 7 else 0
    return NUMBER_WORDS.get(low, 0)


def build_tsg(doc: ParsedDoc, caption_id: str, text: Optional[str] = None,
              start: Optional[float] = None, end: Optional[float] = None) -> TextSceneGraph:
    """The TSG of one parsed caption; ``text`` defaults to ``doc.text``.

    Never raises for an odd parse: a doc with no tokens (or no nouns) gives a
    TSG with no nodes.
    """
    b = _Builder(doc)
    if doc.tokens:
        b.find_entities()
        b.collect_attributes()
        b.verb_relations()
        b.noun_relations()
        b.adverbs()
    return TextSceneGraph(caption_id, doc.text if text is None else text, b.nodes, b.edges, start, end)
