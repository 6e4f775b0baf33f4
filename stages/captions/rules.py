"""Dependency parse (internal, ClearNLP-style form) → textual scene graph.

The rules, in the order they run (each names the labels it reads):

* **Repairs** (:func:`repair`) of three tagging slips of small models on
  caption fragments, before anything else.
* **Objects**: every noun (``NOUN``/``PROPN``) that does not modify another
  noun. How a word before it is written comes from the learned
  ``modifiers`` list (``keep`` → part of the name, "tree trunk"; ``attr`` →
  ``( poles , is , metal )``; ``have`` → ``( clock , have , face )``;
  ``drop``); an unseen noun modifier is an attribute, a closed compound wins
  ("wet suit" → "wetsuit"), learned ``renames`` apply ("guy" → "person").
  Quantity, frame and part heads give way to the noun after "of" ("a bunch of
  birds", "a photo of a cat", "the end of a hot dog"); "group", "piece",
  "part", "slice", "patch" stay as its attribute. Pronouns "it/they/them/he/
  she…" resolve to the nearest compatible earlier object that is not their own
  governor; an unresolved he/she is "man"/"woman"; other unresolved pronouns
  are dropped.
* **Attributes** (``obj_attr``): ``amod`` adjectives and participles (also
  those the parser hung on a compound word), shade words joined to their
  colour ("dark green"), adverbs ("partly cloudy"), ``conj``-joined
  adjectives, ``nummod`` numbers (as digits; they also set
  ``TextNode.count``), and copular predicates ("the car is red").
* **Relations** (``subj_pred``/``pred_obj``): a verb's subjects are its
  ``nsubj``/``nsubjpass``, the noun it modifies (``acl``, ``relcl``, with the
  relative pronoun replaced), the ``attr`` of an existential "there is", or
  those of the verb it is coordinated with or complements (``conj``,
  ``xcomp``, ``advcl``). Its objects are ``dobj`` nouns (predicate: the verb
  with its particle, "pick up") and ``prep`` objects (predicate: verb +
  preposition, "sit on"; multi-word prepositions "on top of", "in front of",
  "out of", "next to" are joined; a verb with a direct object hands its
  prepositional phrase to that object). A passive's ``agent`` becomes the
  subject ("bear surrounded by grass" → ``( grass , surround , bear )``), and
  so does the "with"/"in" object of covering verbs ("covered with snow"),
  except after verbs of placement ("parked by the building" → ``park by``).
  Copular "be" contributes no word ("the cat is on the mat" → "on"). A stranded
  preposition takes the fronted or modified noun ("blue table the plates are
  on"). A noun's ``prep`` gives (noun, prep, object), rewritten by the learned
  ``prep_objects`` ("man in a shirt" → ``wear``); "X with Y on top" gives
  (Y, on top of, X); "X of Y" gives (Y, have, X) unless the learned
  ``of_heads`` or a container says otherwise ("a mug of coffee" →
  ``( coffee , in , mug )``); "Y's X" gives (Y, have, X); "X has Y on it"
  only (Y, on, X).
* **Coordination**: ``conj`` of a subject or object repeats the edge
  ("a man and a woman sit on a bench" → two ``subj_pred`` edges).
* **Reciprocals**: "two giraffes standing together", "next to each other" →
  one object related to itself, written in the singular without its count.
* **Predicate attributes** (``pred_adv``): ``advmod`` adverbs of a verb that
  has a relation node ("runs quickly"), except wh-words, negation, degree and
  place words ("there", "here").

Entry point: :func:`build_tsg`.
"""
from __future__ import annotations

import json
from functools import lru_cache
from copy import copy
from pathlib import Path
from typing import Optional

from schemas.records import TextEdge, TextNode, TextSceneGraph
from stages.captions.depparse import ParsedDoc

NOUN_POS = ("NOUN", "PROPN")
VERB_POS = ("VERB", "AUX")
#: "a <quantity> of X" → X. Values: the attribute FACTUAL keeps (or None).
QUANTITY_NOUNS = {
    "group": "group of", "piece": "piece", "part": "part", "slice": "slice", "mound": "mound",
    "patch": "patch", "sheet": "sheet", "body": None,
    "bunch": None, "bits": None, "bit": None, "stack": None, "pile": None, "row": None,
    "rows": None, "lot": None, "lots": None, "alot": None, "herd": None, "flock": None,
    "pair": None, "couple": None, "number": None, "set": None, "variety": None,
    "collection": None, "cluster": None, "bundle": None, "handful": None, "plenty": None,
    "kind": None, "type": None, "line": None, "crowd": None, "team": None, "array": None,
    "assortment": None, "series": None, "batch": None, "clump": None,
    "mass": None, "swarm": None, "fleet": None, "litter": None, "grove": None,
    "selection": None, "ton": None, "tons": None, "dozens": None, "thicket": None,
}
#: "a photo of X" is X in FACTUAL.
FRAME_NOUNS = {"scene", "image", "photo", "photograph", "shot", "view", "closeup", "close-up"}
#: Containers: "a mug of coffee" → ( coffee , in , mug ) unless the learned lexicon says otherwise.
CONTAINERS = {"mug", "cup", "glass", "glasses", "bottle", "bottles", "jar", "can", "carton", "pot",
              "pitcher", "jug", "tub", "bucket", "basket", "box", "bag", "vase"}
#: Nouns that with "of" form a spatial preposition: "on top of", "in front of".
RELATIONAL_NOUNS = {"top", "side", "front", "middle", "edge", "corner", "back", "left", "right",
                    "end", "bottom", "center", "centre", "rear", "base", "surface", "tip"}
#: Compound modifiers written as attributes when the learned lexicon has no entry.
ATTRIBUTE_NOUNS = {
    "metal", "wood", "leather", "plastic", "glass", "stone", "brick", "steel", "iron", "concrete",
    "cement", "cloth", "cotton", "wool", "denim", "silver", "gold", "rubber", "ceramic", "marble",
    "straw", "wicker", "porcelain", "chrome", "aluminum", "bamboo", "fur", "silk", "velvet", "lace",
    "tin", "copper", "brass", "granite", "vinyl", "canvas", "clay", "orange", "pink", "tan",
    "beige", "maroon", "navy", "khaki", "teal", "purple", "turquoise", "gray", "grey", "white",
    "black", "brown", "red", "blue", "green", "yellow", "striped", "wire", "mesh", "foam",
    "suede", "bronze",
}
#: Attribute spellings FACTUAL uses instead of the caption's word.
ATTRIBUTE_FORMS = {"wood": "wooden", "blond": "blonde"}
SHADES = {"dark", "light", "bright", "pale", "deep", "navy", "hot", "neon", "olive", "royal", "sky",
          "lime", "forest", "baby", "off", "golden", "dull", "pastel", "faded", "medium"}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
                "fourteen": 14, "fifteen": 15, "twenty": 20, "both": 2, "dozen": 12}
#: Person nouns by the pronoun that can stand for them: "he" never resolves to a female noun, "she"
#: never to a male one, and a noun of the pronoun's own gender wins over a neutral one.
MALE_NOUNS = {"man", "boy", "guy", "gentleman", "father", "dad", "husband", "son", "brother", "king",
              "actor", "waiter", "groom", "grandfather", "grandpa", "uncle", "boyfriend", "male", "policeman",
              "fisherman", "cameraman", "sir", "lad", "fellow", "businessman", "sportsman", "horseman"}
FEMALE_NOUNS = {"woman", "girl", "lady", "mother", "mom", "wife", "daughter", "sister", "queen", "actress",
                "waitress", "bride", "grandmother", "grandma", "aunt", "girlfriend", "female", "gal",
                "policewoman", "businesswoman", "ballerina", "cheerleader", "madam"}
PERSON_NOUNS = MALE_NOUNS | FEMALE_NOUNS | {
    "person", "child", "kid", "player", "skier", "surfer", "skateboarder", "snowboarder", "rider", "batter",
    "catcher", "pitcher", "people", "baby", "toddler", "infant", "adult", "chef", "cook", "worker", "officer",
    "driver", "passenger", "athlete", "umpire", "referee", "student", "teacher", "teenager", "teen", "gymnast",
    "dancer", "reporter", "anchor", "host", "presenter", "bartender", "instructor", "coach", "trainer",
    "musician", "drummer", "guitarist", "singer", "pianist", "violinist", "boxer", "wrestler", "runner",
    "swimmer", "diver", "cyclist", "biker", "climber", "skater", "performer", "spectator", "goalie",
    "doctor", "nurse", "customer", "barber", "stylist", "artist", "painter", "model", "photographer",
    "vendor", "farmer", "jockey", "pedestrian", "tourist", "hiker", "kayaker", "rower", "sailor",
    "lifeguard", "owner", "friend", "partner", "teammate", "opponent", "contestant", "competitor",
    "participant", "individual", "someone", "somebody", "soldier", "mechanic", "judge", "lifter",
    "weightlifter", "archer", "fencer", "golfer", "bowler", "fighter", "kid", "youngster", "audience"}
PRONOUNS = {"it": "thing", "they": "plural", "them": "plural", "he": "person", "him": "person",
            "she": "person", "her": "person", "itself": "thing", "themselves": "plural",
            "himself": "person", "herself": "person"}
MALE_PRONOUNS = {"he", "him", "himself"}
FEMALE_PRONOUNS = {"she", "her", "herself"}
#: Determiners of a mention that names again an object already mentioned ("a cat … the cat").
DEFINITE_WORDS = {"the", "this", "that", "these", "those"}
#: Words that make a mention a new object even with "the" ("the other car", "the second man").
NEW_MENTION_WORDS = {"other", "another", "second", "third", "different", "next", "new", "last", "first",
                     "same"}
PERSON_PRONOUNS = {"he": "man", "him": "man", "she": "woman", "her": "woman"}
RELATIVE_PRONOUNS = {"that", "which", "who", "whom", "whose", "where"}
SKIP_ADVERBS = {"there", "here", "not", "n't", "never", "also", "too", "very", "so", "then",
                "where", "when", "how", "why", "just", "only", "as", "even", "still", "again",
                "while", "now", "already", "almost", "all", "each", "other", "together"}
PLACE_ADVERBS = {"home", "outside", "inside", "upstairs", "downstairs", "away", "back", "forward",
                 "there", "here", "overhead", "outdoors", "indoors", "nearby", "ahead", "together"}
DEGREE_WORDS = {"very", "so", "too", "really", "more", "most", "quite", "rather", "extremely"}
#: Words that join a following preposition: "next to", "close to", "out of".
PREP_PREFIXES = {"next", "close", "out", "away", "off", "ahead",
                 "in", "on", "left", "right"}
#: Verbs whose passive "by" is a place, not an agent: "parked by the road".
PLACEMENT_VERBS = {"park", "dock", "line", "stand", "sit", "place", "locate", "situate", "position",
                   "stack", "leave", "store", "set", "put", "hang", "lay", "lie", "rest", "moor",
                   "tie", "chain", "lock", "plant", "pile", "arrange", "display"}
COPULAS = {"be"}
#: Verb + preposition + noun idioms that name an event, not a place: "comes to a halt" is one
#: intransitive predicate, "halt" no object.
IDIOMS = {("come", "to"): {"halt", "stop", "standstill", "rest", "end"},
          ("grind", "to"): {"halt", "stop", "standstill"}, ("burst", "into"): {"tears", "laughter"}}
#: Direction words the parser may hang on another adverb ("moves right gradually").
DIRECTION_WORDS = {"left", "right", "up", "down", "forward", "backward", "backwards", "away", "around"}
#: Verbs whose complement clause's subject is what they act on: "watching the fish swim" → ( watch , fish ).
PERCEPTION_VERBS = {"watch", "see", "observe", "hear", "notice", "help", "let", "film", "record", "spot"}
#: Passives whose "with"/"in" names the agent: "a field lined with trees" → ( trees , line , field ).
COVERING_VERBS = {"cover", "line", "surround", "decorate", "top", "frame", "border", "coat", "crowd",
                  "shade", "litter", "dot", "scatter", "bury"}
#: How FACTUAL writes some multi-word prepositions.
PREP_NORMAL = {"at top of": "on top of", "at side of": "on side of", "at corner of": "in corner of",
               "inside of": "inside", "outside of": "outside", "in between": "between",
               "on to": "onto", "in to": "into", "at bottom of": "on bottom of", "at edge of": "on edge of",
               "at end of": "on end of", "at back of": "on back of", "along side": "alongside",
               "next of": "next to"}
#: Words that deny the verb, copula or preposition they hang on ("does not jump", "never opens").
NEGATION_WORDS = {"not", "n't", "never", "nt"}
#: Negative quantifiers: they name nothing, so they are never objects ("nobody", "nothing").
NEGATIVE_QUANTIFIERS = {"nobody", "nothing", "noone", "none", "nowhere", "neither", "noboby"}
#: Words that name nothing under a negation: "isn't holding anything".
NEGATIVE_POLARITY = {"anything", "anyone", "anybody", "any", "anywhere"}
DETERMINER_WORDS = {"the", "a", "an", "this", "that", "these", "those", "some", "any", "every", "each",
                    "its", "his", "her", "their", "my", "our", "your", "another", "other"}


@lru_cache(maxsize=1)
def lexicon() -> dict:
    """The learned word lists (``lexicon.json``, built by ``scripts/build_caption_lexicons.py``)."""
    path = Path(__file__).with_name("lexicon.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {"verbs": data.get("verbs", {}), "modifiers": data.get("modifiers", {}),
            "prep_objects": data.get("prep_objects", {}), "of_heads": data.get("of_heads", {}),
            "closed_compounds": {c.replace(" ", "") for c in data.get("closed_compounds", [])},
            "renames": data.get("renames", {}), "plural_objects": set(data.get("plural_objects", []))}


class _Builder:
    def __init__(self, doc: ParsedDoc):
        self.doc = doc
        self.t = doc.tokens
        self.lex = lexicon()
        self.nodes: list[TextNode] = []
        self.edges: list[TextEdge] = []
        self.obj_node: dict[int, int] = {}     # entity head token → node id
        self.alias: dict[int, int] = {}        # token → token it stands for (quantities, pronouns)
        self.verb_rel: dict[int, list[int]] = {}
        self.edge_keys: set[tuple[int, int, str]] = set()
        self.predicate_nouns: set[int] = set()
        self.name_tokens: dict[int, list[int]] = {}   # entity head → modifier tokens in its name
        self.same_as: dict[int, int] = {}      # a repeated definite mention → its first mention
        self.groups: set[int] = set()          # plural pronouns that stand for a coordination ("they")
        self.has_no = any(tok.text.lower() == "no" for tok in self.t)
        self._is_noun: dict[int, bool] = {}

    # -------------------------------------------------------------- helpers
    def kids(self, i: int, *labels: str) -> list[int]:
        children = self.doc.children(i)
        if not labels or not children:
            return children
        t = self.t
        return [k for k in children if t[k].label in labels]

    def low(self, i: int) -> str:
        return self.t[i].text.lower()

    def add_node(self, kind: str, label: str, lemma: str, span: tuple[int, int], count: int = 1,
                 negated: bool = False) -> int:
        self.nodes.append(TextNode(len(self.nodes), kind, label, lemma, span, count, negated))
        return len(self.nodes) - 1

    def add_edge(self, src: int, dst: int, kind: str) -> None:
        if src != dst and (src, dst, kind) not in self.edge_keys:
            self.edge_keys.add((src, dst, kind))
            self.edges.append(TextEdge(src, dst, kind))

    def is_reciprocal(self, i: int) -> bool:
        """"each other", "one another"."""
        low = self.low(i)
        return (low == "other" and any(self.low(k) == "each" for k in self.doc.children(i))) or \
            low == "another" or (low == "one" and i + 1 < len(self.t) and self.low(i + 1) == "another")

    # -------------------------------------------------------------- negation
    def is_denied(self, i: int, depth: int = 0) -> bool:
        """Is verb/copula/preposition ``i`` denied: "does not jump", "never opens", "isn't on"?

        Its own ``neg`` (or "not"/"never" adverb) child, or that of the verb it
        complements ("is not trying to catch"), or of the verb it is joined to
        by "or"/"nor" without a subject of its own ("does not bark or run").
        """
        t = self.t
        for k in self.doc.children(i):
            if t[k].label == "neg" or (t[k].label == "advmod" and self.low(k) in NEGATION_WORDS):
                return True
        head = t[i].head
        if depth > 3 or head == i:
            return False
        if t[i].label == "xcomp":
            return self.is_denied(head, depth + 1)
        if t[i].label == "conj" and not self.kids(i, "nsubj", "nsubjpass") and any(
                self.low(c) in ("or", "nor") for c in self.kids(head, "cc")):
            return self.is_denied(head, depth + 1)
        return False

    def names_nothing(self, i: int) -> bool:
        """A negative quantifier: "nobody", "no one", "nothing", "no dogs", "anything" under a
        negation. It is never an object ("a no parking sign" is a sign: "no" belongs to "parking")."""
        low = self.low(i)
        if low in NEGATIVE_QUANTIFIERS:
            return True
        if self.has_no and any(self.low(k) == "no" for k in self.kids(i, "det")) and not any(
                self.t[k].label == "compound" and k < i for k in self.doc.children(i)):
            return True
        if low in NEGATIVE_POLARITY:
            verb = next((a for a in self.ancestors(i) if self.t[a].pos in VERB_POS), None)
            return verb is not None and self.is_denied(verb)
        return False

    def is_noun(self, i: int) -> bool:
        """Is token ``i`` an object's head (before quantities, frames and pronouns are resolved)?"""
        if i not in self._is_noun:
            self._is_noun[i] = self._noun(i)
        return self._is_noun[i]

    def _noun(self, i: int) -> bool:
        tok = self.t[i]
        if self.is_reciprocal(i) or self.names_nothing(i) or self.is_idiom_noun(i):
            return False
        if not any(ch.isalpha() for ch in tok.text) or tok.label in ("fixed", "case", "det", "prt"):
            return False
        if tok.pos in NOUN_POS:
            return not self.is_noun_modifier(i)
        # a noun the tagger missed, in a noun's slot (or with an article: "by a locomotive")
        slot = tok.label in ("nsubj", "nsubjpass", "dobj", "pobj", "root")
        if tok.label in ("dobj", "pobj") and tok.tag == "RB" and tok.text.isalpha() and len(tok.text) > 3 \
                and self.low(i) not in PLACE_ADVERBS:
            return True  # "person wears backpack": an object the tagger took for an adverb
        return slot and (tok.tag in ("NN", "NNS") or (tok.pos in ("ADJ", "VERB", "X") and any(
            self.low(k) in ("a", "an") for k in self.kids(i, "det"))))

    def is_noun_modifier(self, i: int, depth: int = 0) -> bool:
        tok = self.t[i]
        if tok.label in ("compound", "amod", "nummod"):
            return True
        if tok.label == "conj" and tok.head < i and depth < 3:  # "a wood and metal bench"
            return self.is_noun_modifier(tok.head, depth + 1) and self.t[tok.head].label != "nummod"
        # "a night stand": a bare noun before a noun head, attached as npadvmod/nmod
        return (tok.label in ("npadvmod", "nmod", "dep") and i < tok.head <= i + 4
                and self.t[tok.head].pos in NOUN_POS)

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

    def span_text(self, start: int, end: int) -> str:
        """The caption's text in ``[start, end)``, lower-cased, whitespace collapsed ("t-shirt", "id tag")."""
        return " ".join(self.doc.text[start:end].lower().split())

    def ancestors(self, i: int) -> list[int]:
        out = []
        while self.t[i].head != i and len(out) < 50:
            i = self.t[i].head
            out.append(i)
        return out

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
            ofs = [k for k in self.kids(tok.i, "prep") if self.low(k) == "of"]
            quantity = low in QUANTITY_NOUNS or tok.lemma.lower() in QUANTITY_NOUNS or low in FRAME_NOUNS or (
                low in RELATIONAL_NOUNS and tok.label != "pobj")
            if quantity and ofs:  # "a bunch of birds", "slices of pizza", "a photo of a cat", "the end of a hot dog"
                inner = [k for k in self.kids(ofs[0], "pobj") if self.is_noun(k)]
                if inner:
                    self.alias[tok.i] = inner[0]
                    continue
            if low in RELATIONAL_NOUNS and ofs and tok.label == "pobj":
                continue  # part of a multi-word preposition, see prep_phrase
            if low in RELATIONAL_NOUNS and tok.label == "pobj" and not self.doc.children(tok.i) \
                    and self.low(tok.head) == "on":
                continue  # "with a plant on top", "a sign on side": a place, not an object
            if self.predicate_nominal(tok.i):
                self.predicate_nouns.add(tok.i)
                continue  # "the egg is a sculpture": an attribute, see copular_attribute
            self.obj_node[tok.i] = -1
        names = {i: self.object_name(i) for i in self.obj_node}
        self.same_as = self.same_mentions({i: name[1] for i, name in names.items()})
        fallback: dict[int, str] = {}
        for tok in t:
            if tok.pos == "PRON" and tok.text.lower() in PRONOUNS and tok.label != "poss":
                target = self.antecedent(tok.i)
                if target is not None:
                    self.alias[tok.i] = target
                elif tok.text.lower() in PERSON_PRONOUNS and tok.label in ("nsubj", "nsubjpass", "dobj", "pobj"):
                    fallback[tok.i] = PERSON_PRONOUNS[tok.text.lower()]
        for i in sorted(set(self.obj_node) | set(fallback)):
            if i in fallback:  # "he is skiing" → ( man , ski , … ), as FACTUAL writes it
                tok = t[i]
                self.obj_node[i] = self.add_node("object", fallback[i], fallback[i], (tok.start, tok.end))
            elif i in self.same_as:  # "a cat … the cat": one node
                self.obj_node[i] = self.obj_node[self.same_as[i]]
                self.name_tokens[i] = names[i][0][:-1]
            else:
                self.obj_node[i] = self.make_object(i, names[i])
        for src, dst in list(self.alias.items()):
            attr = QUANTITY_NOUNS.get(self.low(src)) or QUANTITY_NOUNS.get(self.t[src].lemma.lower())
            if attr and attr != "group of":
                attr = self.low(src)  # FACTUAL keeps the word: ( pizza , is , slices )
            target = self.resolve(dst)
            if attr and target is not None and self.t[src].pos in NOUN_POS:
                self.add_attribute(self.obj_node[target], attr, attr, (self.t[src].start, self.t[src].end))

    def predicate_nominal(self, i: int) -> bool:
        tok = self.t[i]
        if tok.label != "attr" or self.t[tok.head].lemma.lower() not in COPULAS:
            return False
        subj = self.kids(tok.head, "nsubj")
        return bool(subj) and self.t[subj[0]].pos in NOUN_POS and not self.kids(i, "prep", "relcl", "acl")

    def clause_head(self, i: int) -> int:
        """The verb (or copula) of the clause token ``i`` is in; the root when it has none."""
        for a in [i] + self.ancestors(i):
            if self.t[a].pos in VERB_POS and self.t[a].label not in ("aux", "auxpass", "amod"):
                return a
        return ([i] + self.ancestors(i))[-1]

    def clause_subject_tokens(self, v: int, depth: int = 0) -> list[int]:
        """The subject words of verb ``v``, inherited through ``conj``/``xcomp``/``advcl`` and relative clauses."""
        own = self.kids(v, "nsubj", "nsubjpass")
        if own or depth > 3 or self.t[v].head == v:
            return own
        if self.t[v].label in ("acl", "relcl"):
            return [self.t[v].head]
        if self.t[v].label in ("conj", "xcomp", "advcl"):
            return self.clause_subject_tokens(self.t[v].head, depth + 1)
        return []

    def same_mentions(self, names: dict[int, str]) -> dict[int, int]:
        """Repeated definite mentions: ``{later token: first token}`` for "a cat … the cat".

        The later mention has "the"/"this"/…, the same name, describing words
        that the earlier one has too (or none of its own clashing: "a car … the
        red car" is one car, "a blue car … the red car" two), is in another
        clause ("the man next to the man" are two) and is not "the other …".
        """
        out: dict[int, int] = {}
        tokens = sorted(names)
        for i in tokens:
            words = {self.low(k) for k in self.doc.children(i)}
            if not words & DEFINITE_WORDS or words & NEW_MENTION_WORDS:
                continue
            clause = self.clause_head(i)
            earlier = [j for j in tokens if j < i and j not in out and names[j] == names[i]
                       and self.clause_head(j) != clause and i not in self.conjuncts(j)
                       and j not in self.ancestors(i)]  # "the man standing next to the man": two
            mine = self.describing_words(i)
            if mine:
                earlier = [j for j in earlier if mine <= self.describing_words(j)] or [
                    j for j in earlier if not self.describing_words(j)]
            if earlier:
                out[i] = earlier[-1]
        return out

    def describing_words(self, i: int) -> set[str]:
        return {self.low(k) for k in self.kids(i, "amod", "compound", "nummod") if k < i}

    def antecedent(self, i: int) -> Optional[int]:
        """The object token pronoun ``i`` stands for, or None.

        Never a word of its own clause that would make it point at itself: the
        word its phrase hangs on, that verb's (inherited) subjects, and the
        verb's direct object when the pronoun is in the verb's prepositional
        phrase ("reads a paper on it": the phrase goes to the paper). Gender and
        number must fit; the nearest earlier candidate wins.
        """
        low = self.low(i)
        kind = PRONOUNS[low]
        governor = next((a for a in self.ancestors(i) if self.t[a].label not in ("prep", "agent")
                         and self.t[a].pos not in ("ADP",)), i)
        excluded = {governor, *self.clause_subject_tokens(governor)}
        if self.t[governor].label in ("acl", "relcl"):
            excluded.add(self.t[governor].head)
        if self.t[i].label == "pobj" and self.t[governor].pos in VERB_POS:
            excluded.update(self.kids(governor, "dobj"))
        excluded = {self.same_as.get(j, j) for j in excluded}
        candidates = [j for j in self.obj_node if j < i and self.same_as.get(j, j) not in excluded
                      and self.t[j].pos in NOUN_POS]
        if kind == "person":
            candidates = [j for j in candidates if self.t[j].lemma.lower() in PERSON_NOUNS]
            other = FEMALE_NOUNS if low in MALE_PRONOUNS else MALE_NOUNS if low in FEMALE_PRONOUNS else set()
            own = MALE_NOUNS if low in MALE_PRONOUNS else FEMALE_NOUNS if low in FEMALE_PRONOUNS else set()
            candidates = [j for j in candidates if self.t[j].lemma.lower() not in other]
            candidates = [j for j in candidates if self.t[j].lemma.lower() in own] or candidates
        elif kind == "plural":
            groups = [j for j in candidates if any(k in self.obj_node for k in self.kids(j, "conj"))]
            plural = [j for j in candidates if self.t[j].tag in ("NNS", "NNPS")]
            best = max(groups + plural) if groups + plural else None
            if best is not None and best in groups:
                self.groups.add(i)  # "a man and a woman dance, then they bow": both
            return best if best is not None else (max(candidates) if candidates else None)
        return max(candidates) if candidates else None

    def modifier_role(self, k: int) -> str:
        """How a word before a noun is written: keep | attr | have | drop."""
        tok = self.t[k]
        word = tok.text.lower()
        if word in ATTRIBUTE_FORMS:
            return "attr"
        if word in POSITION_WORDS and self.lex["modifiers"].get(word) in (None, "drop"):
            return "attr"  # "the middle bottle": which bottle it is, never dropped
        if self.hyphen_joined(k):
            return "keep"  # "t-shirt", "x-ray": one word written with a hyphen
        learned = self.lex["modifiers"].get(word)
        if tok.label == "amod":
            if tok.pos == "NUM":
                return "drop"
            return learned if learned in ("keep", "attr", "drop") else "attr"
        if learned:
            return learned
        return "attr"  # unseen in training: FACTUAL mostly writes a noun modifier as an attribute

    def hyphen_joined(self, k: int) -> bool:
        """Word ``k`` is glued to the word after next by a hyphen, without spaces ("t-shirt")."""
        t = self.t
        return k + 2 < len(t) and t[k + 1].text == "-" and t[k].end == t[k + 1].start \
            and t[k + 1].end == t[k + 2].start and t[k].label == "compound"

    def name_modifiers(self, i: int) -> list[int]:
        """Modifier tokens of noun ``i`` that are nouns or noun-like (compound chain)."""
        out = []
        for k in self.doc.children(i):
            if k < i and (self.t[k].label == "compound" or self.is_noun_modifier(k)) \
                    and self.t[k].label not in ("amod", "nummod"):
                out.append(k)
        return out

    def object_name(self, i: int) -> tuple[list[int], str, str, list[int]]:
        """Entity head ``i`` → (the tokens of its name, label, lemma, "have" modifiers)."""
        kept = [i]
        haves: list[int] = []
        stack = self.name_modifiers(i) + [k for k in self.kids(i, "amod")
                                          if k < i and self.modifier_role(k) == "keep"
                                          and not (self.low(k) in SHADES and self.t[k + 1].label == "amod")]
        before = i - 1
        if before >= 0 and self.t[before].head == i and before not in stack and \
                self.low(before) + self.low(i) in self.lex["closed_compounds"]:
            stack.append(before)  # "wet suit" → "wetsuit": a name, not an attribute
        while stack:
            k = stack.pop()
            role = self.modifier_role(k) if self.t[k].label != "amod" else "keep"
            if k == i - 1 and self.low(k) + self.low(i) in self.lex["closed_compounds"]:
                role = "keep"
            if role == "keep":
                kept.append(k)
                stack.extend(self.name_modifiers(k))
            elif role == "have" and self.t[k].pos in NOUN_POS:
                haves.append(k)
        kept.sort()
        run = [i]  # only the contiguous run that ends at the head ("tree trunk", not "tree big trunk")
        for p in reversed(kept[:-1]):
            if p == run[0] - 1 or (p == run[0] - 2 and self.t[run[0] - 1].pos in ("PUNCT", "PART")):
                run.insert(0, p)
        tok = self.t[i]
        label = self.span_text(self.t[run[0]].start, tok.end)
        lemma = " ".join(self.t[p].lemma.lower() for p in run)
        closed = label.replace(" ", "")
        if " " in label and closed in self.lex["closed_compounds"]:
            label = lemma = closed  # "surf board" → "surfboard", as FACTUAL writes it
        elif label in self.lex["renames"]:
            label = lemma = self.lex["renames"][label]  # "guy" → "person", as FACTUAL writes it
        return run, label, lemma, haves

    def make_object(self, i: int, name: Optional[tuple[list[int], str, str, list[int]]] = None) -> int:
        run, label, lemma, haves = name or self.object_name(i)
        tok = self.t[i]
        count = 1
        for k in self.kids(i, "nummod"):
            count = number_value(self.t[k].text) or count
        node = self.add_node("object", label, lemma, (self.t[run[0]].start, tok.end), count)
        self.name_tokens[i] = run[:-1]
        for k in haves:  # "clock face" → ( clock , have , face )
            owner = self.add_node("object", self.low(k), self.t[k].lemma.lower(), (self.t[k].start, self.t[k].end))
            self.relation([owner], [], [node], lemma="have")
        return node

    # -------------------------------------------------------------- attributes
    def add_attribute(self, obj: int, label: str, lemma: str, span: tuple[int, int], negated: bool = False) -> None:
        for e in self.edges:
            if e.src == obj and e.kind == "obj_attr" and self.nodes[e.dst].lemma == lemma \
                    and self.nodes[e.dst].negated == negated:
                return
        node = self.add_node("attribute", label, lemma, span, negated=negated)
        self.add_edge(obj, node, "obj_attr")

    def attribute_phrase(self, i: int) -> tuple[str, str, tuple[int, int]]:
        """An adjective with its degree adverb or shade word: ("dark green", "dark green", span)."""
        words = [i]
        for k in self.doc.children(i):
            if k >= i or self.low(k) in DEGREE_WORDS:
                continue
            if (self.t[k].label == "advmod" and self.t[k].pos == "ADV" and self.t[k].tag != "WRB") or \
                    self.low(k) in SHADES:
                words.append(k)
        words = sorted(w for w in words if w >= i - 2)
        label = " ".join(ATTRIBUTE_FORMS.get(self.low(w), self.low(w)) for w in words)
        return label, label, (self.t[words[0]].start, self.t[i].end)

    def collect_attributes(self) -> None:
        t = self.t
        for head, node in list(self.obj_node.items()):
            named = set(self.name_tokens.get(head, []))
            # adjectives the parser hung on a compound word ("black snow pants") describe the object
            kids = [k for k in self.doc.children(head) if k not in named] + [
                k for m in named for k in self.kids(m, "amod") if k not in named]
            # ... and so do those hung on a noun modifier written as an attribute ("long grey cardigan")
            kids += [k for m in self.doc.children(head) if m < head and m not in named
                     and self.t[m].label == "compound" and self.modifier_role(m) == "attr"
                     for k in self.kids(m, "amod") if k not in named and self.low(k) not in SHADES]
            shade_used: set[int] = set()
            for k in sorted(kids):
                tok = t[k]
                word = tok.text.lower()
                if k in shade_used:
                    continue
                if tok.label == "amod" or (k < head and self.is_noun_modifier(k) and tok.label != "nummod"
                                           and self.modifier_role(k) == "attr"):
                    shade = word in SHADES and k + 1 < len(t) and t[k + 1].head == head and (
                        t[k + 1].label == "amod" or t[k + 1].text.lower() in ATTRIBUTE_NOUNS)
                    if tok.label == "amod" and self.modifier_role(k) != "attr" and not shade:
                        continue
                    if shade:
                        shade_used.add(k + 1)  # "dark green leaves": one attribute
                        label = f"{word} {t[k + 1].text.lower()}"
                        self.add_attribute(node, label, label, (tok.start, t[k + 1].end))
                        continue
                    for c in self.conjuncts(k):
                        if t[c].pos in ("ADJ", "VERB", "NOUN", "PROPN", "ADV") and t[c].text.isalpha():
                            label, lemma, span = self.attribute_phrase(c)
                            self.add_attribute(node, label, lemma, span)
                elif tok.label == "nummod":
                    value = number_value(tok.text)
                    if value and value > 1:
                        self.add_attribute(node, tok.text.lower(), str(value), (tok.start, tok.end))
                elif tok.label in ("det", "predet") and word == "both":
                    self.add_attribute(node, "both", "2", (tok.start, tok.end))

    # -------------------------------------------------------------- relations
    def entities_of(self, i: int) -> list[int]:
        """Object nodes for token ``i`` and its conjuncts (quantities and pronouns resolved)."""
        out = []
        for c in self.conjuncts(i):
            target = self.resolve(c)
            if target is None:
                continue
            for member in self.conjuncts(target) if c in self.groups else [target]:
                member = self.resolve(member)
                if member is not None and self.obj_node[member] not in out:
                    out.append(self.obj_node[member])
        return out

    def relation(self, subjects: list[int], pred_tokens: list[int], objects: list[int],
                 lemma: str, verb: Optional[int] = None, negated: bool = False) -> Optional[int]:
        subjects = [s for s in subjects if s >= 0]
        if not subjects or not lemma:
            return None
        pred_tokens = sorted(set(pred_tokens))
        label = " ".join(self.low(p) for p in pred_tokens)
        span = (self.t[pred_tokens[0]].start, self.t[pred_tokens[-1]].end) if pred_tokens else (0, 0)
        node = self.add_node("relation", label or lemma, lemma, span, negated=negated)
        for s in subjects:
            self.add_edge(s, node, "subj_pred")
        for o in objects:
            self.add_edge(node, o, "pred_obj")
        if verb is not None:
            self.verb_rel.setdefault(verb, []).append(node)
        return node

    def verb_lemma(self, v: int) -> str:
        """The verb's lemma, corrected by the learned verb list where spaCy's is not a known verb."""
        tok = self.t[v]
        lemma = tok.lemma.lower()
        verbs = self.lex["verbs"]
        if lemma in verbs or not verbs:
            return lemma
        word = tok.text.lower()
        options = []
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                stem = word[:-len(suffix)]
                options += [stem, stem + "e"]
                if len(stem) > 2 and stem[-1] == stem[-2]:
                    options.append(stem[:-1])
                if stem.endswith("i"):
                    options.append(stem[:-1] + "y")
        known = [o for o in options if o in verbs]
        return max(known, key=lambda o: verbs[o]) if known else lemma

    def prep_phrase(self, p: int) -> tuple[list[int], list[int]]:
        """Preposition token → (its words, the noun tokens it governs).

        Joins "out of", "in between", "on top of", "in front of"; a multi-word
        UD preposition keeps its ``fixed`` words.
        """
        words = [p] + self.kids(p, "fixed")
        cur = p
        for _ in range(4):
            objs = self.kids(cur, "pobj", "pcomp", "dobj")
            if objs:
                noun = objs[0]
                if self.low(noun) in RELATIONAL_NOUNS and noun not in self.obj_node:
                    of = [k for k in self.kids(noun, "prep") if self.low(k) == "of"]
                    if of:
                        words += [noun, of[0]]
                        cur = of[0]
                        continue
                if self.t[noun].pos == "VERB" and self.t[noun].label == "pcomp":
                    nouns = self.kids(noun, "dobj")  # "on cutting board" mis-parsed as a gerund
                    if nouns and noun == nouns[0] - 1:
                        return words, nouns
                return words, objs
            inner = self.kids(cur, "prep")
            if inner:  # "out of the water": out → of → water
                words.append(inner[0])
                cur = inner[0]
                continue
            break
        return words, []

    def preps_of(self, head: int, taken: tuple[int, ...] = ()) -> list[tuple[str, list[int], list[int]]]:
        """(preposition text, its words, governed nouns) for every preposition of ``head``;
        words in ``taken`` (the verb's particles) are not joined again."""
        out = []
        candidates = self.kids(head, "prep", "agent") + [
            k for a in self.kids(head, "advmod", "prt", "amod", "acomp") for k in self.kids(a, "prep")]
        for p in candidates:
            words, nouns = self.prep_phrase(p)
            before = p - 1
            if before >= 0 and self.low(before) in PREP_PREFIXES and before not in words and before not in taken and (
                    self.t[before].head in (head, p) or self.t[before].label in ("advmod", "prt")):
                words = [before] + words  # "next to", "out of", "in between"
            text = " ".join(self.low(w) for w in sorted(set(words)))
            text = PREP_NORMAL.get(text, text)
            out.append((text, sorted(set(words)), nouns))
        return out

    def subjects_of_verb(self, v: int, depth: int = 0) -> list[int]:
        t = self.t
        out: list[int] = []
        for s in self.kids(v, "nsubj", "nsubjpass", "csubj"):
            if self.low(s) in RELATIVE_PRONOUNS and t[v].label == "relcl":
                out.extend(self.entities_of(t[v].head))
            else:
                out.extend(self.entities_of(s))
        if not out and self.kids(v, "expl"):  # "there is a cat on the mat"
            for a in self.kids(v, "attr", "dobj"):
                out.extend(self.entities_of(a))
        if out or depth > 3:
            return out
        label = t[v].label
        if label in ("acl", "relcl", "amod") and t[v].head != v:
            return self.entities_of(t[v].head)
        if label in ("conj", "xcomp", "advcl", "ccomp", "dep") and t[v].head != v:
            head = t[v].head
            if t[head].pos in NOUN_POS and head in self.obj_node:
                return self.entities_of(head)
            return self.subjects_of_verb(head, depth + 1)
        return out

    def verb_relations(self) -> None:
        for v, tok in enumerate(self.t):
            if tok.pos not in VERB_POS or tok.label in ("aux", "auxpass"):
                continue
            if tok.label == "amod" and not self.kids(v, "dobj", "prep", "agent"):
                continue  # "a framed picture": an attribute (collect_attributes), not a predicate
            self.verb_relation(v)

    def passive_agents(self, v: int, lemma: str) -> tuple[list[int], set[int]]:
        """The objects that act in passive verb ``v`` ("surrounded by grass", "covered with snow")
        and the preposition words that named them."""
        tok = self.t[v]
        passive = bool(self.kids(v, "nsubjpass", "auxpass")) or (
            tok.tag == "VBN" and tok.label in ("acl", "amod", "relcl"))
        agents: list[int] = []
        agent_words: set[int] = set()
        if passive and lemma not in PLACEMENT_VERBS:
            for a in self.kids(v, "agent"):
                for o in self.kids(a, "pobj"):
                    agents.extend(self.entities_of(o))
            if lemma in COVERING_VERBS:  # "a bench covered with snow" → ( snow , cover , bench )
                for a in self.kids(v, "prep"):
                    if self.low(a) in ("with", "in"):
                        found = [e for o in self.kids(a, "pobj") for e in self.entities_of(o)]
                        agents.extend(found)
                        agent_words.update([a] if found else [])
        return agents, agent_words

    def verb_relation(self, v: int) -> None:
        """The relations of one verb (see the module doc); a denied verb's are negated."""
        if self.low(v) == "left" and self.kids(v, "aux", "auxpass") and any(
                self.low(p) == "of" and p == v + 1 for p in self.kids(v, "prep")):
            self.place_left_of(v)  # "the circle is left of the triangle": a place, not "leave"
            return
        lemma = self.verb_lemma(v)
        is_copula = lemma in COPULAS
        denied = self.is_denied(v)
        subjects = self.subjects_of_verb(v)
        agents, agent_words = self.passive_agents(v, lemma)
        if agents and subjects:
            self.relation(agents, [v], subjects, lemma=lemma, verb=v, negated=denied)  # "surrounded by grass"
        if not subjects:
            return
        particles = sorted([p for p in self.kids(v, "prt") if p > v] + self.adverbial_prepositions(v))
        verb_words = [v] + particles
        verb_lemma = " ".join([lemma] + [self.low(p) for p in particles])
        idiom = self.idiom_words(v, lemma)
        if idiom:  # "comes to a halt": one predicate, no object
            verb_words += idiom
            verb_lemma = " ".join([verb_lemma] + [self.low(w) for w in idiom])
        objs: list[int] = []
        nothing = False  # "holds nothing", "isn't holding anything": denied, with no object
        each_other = False  # "pass each other"
        for o in self.kids(v, "dobj", "dative", "oprd"):
            objs.extend(self.entities_of(o))
            nothing = nothing or self.names_nothing(o)
            each_other = each_other or self.is_reciprocal(o)
        made = bool(agents)
        if each_other and not objs and not is_copula:
            self.reciprocal_relation(subjects, verb_words, verb_lemma, v, denied)
            objs, made = list(subjects), True  # "pass each other on the road": both are on it
        elif is_copula:
            for a in self.kids(v, "attr", "acomp"):
                if self.low(a) in PREP_PREFIXES and self.kids(a, "prep"):
                    continue  # "the cat is next to a wall": a preposition, below
                self.copular_attribute(subjects, a, denied)
        elif objs and not (lemma == "have" and self.points_back(v)):
            self.relation(subjects, verb_words, objs, lemma=verb_lemma, verb=v, negated=denied)
            made = True
        elif nothing:
            self.relation(subjects, verb_words, [], lemma=verb_lemma, verb=v, negated=True)
            made = True
        made = self.prep_relations(v, subjects, objs, verb_words, verb_lemma, agents, agent_words, denied) or made
        if not made and particles and self.low(particles[-1]) in STRANDABLE and self.is_stranded(particles[-1]):
            # "the water the bird is standing on": a particle that is a stranded preposition
            subjects, stranded = self.stranded_object(v, subjects)
            if stranded and subjects:
                self.relation(subjects, verb_words, stranded, lemma=verb_lemma, verb=v, negated=denied)
                made = True
        if not made and len(subjects) == 1 and self.nodes[subjects[0]].count == 2 and any(
                self.low(a) == "together" for a in self.kids(v, "advmod")):
            together = "next to" if lemma in PLACEMENT_VERBS else "with"  # "two giraffes standing together"
            self.relation(subjects, verb_words, subjects, lemma=f"{verb_lemma} {together}", verb=v, negated=denied)
            made = True
        # a complement clause after the verb says what happens ("starts to run", "watch the fish swim");
        # one before it with a subject of its own is a clause of its own, mis-attached by the parser
        # ("stands by the table, then he walks away")
        complements = [c for c in self.kids(v, "xcomp", "ccomp")
                       if c > v or not self.kids(c, "nsubj", "nsubjpass", "expl")]
        if not made and not is_copula and lemma in PERCEPTION_VERBS:
            seen = [e for c in complements for k in self.kids(c, "nsubj") if c > v for e in self.entities_of(k)]
            if seen:  # "people are watching the fish swim" → ( people , watch , fish )
                self.relation(subjects, verb_words, seen, lemma=verb_lemma, verb=v, negated=denied)
                made = True
        if not made and not is_copula and not complements and not [
                k for k in self.kids(v, "dobj", "prep", "agent", "dative") if k not in verb_words]:
            self.relation(subjects, verb_words, [], lemma=verb_lemma, verb=v, negated=denied)  # "a man runs"

    def prep_relations(self, v: int, subjects: list[int], objs: list[int], verb_words: list[int],
                       verb_lemma: str, agents: list[int], agent_words: set[int], denied: bool) -> bool:
        """Relations of verb ``v``'s prepositional phrases; True if one was made."""
        is_copula = self.verb_lemma(v) in COPULAS
        made = False
        agent_words_end = max((o for a in self.kids(v, "agent") for o in self.kids(a, "pobj")), default=len(self.t))
        for prep, words, nouns in self.preps_of(v, tuple(verb_words[1:])):
            if (prep in ("by",) and agents) or set(words) & (agent_words | set(verb_words)):
                continue
            if agents and words[0] > agent_words_end and nouns and (
                    self.noun_prep_lemma(prep, nouns[0]) != prep or self.low(nouns[0]) in CLOTHING):
                # "kicked by a boy in a red shirt": the shirt is the boy's
                self.relation(agents, words, [e for n in nouns for e in self.entities_of(n)],
                              lemma=self.noun_prep_lemma(prep, nouns[0]))
                made = True
                continue
            negated = denied or any(self.is_denied(w) for w in words if self.t[w].pos == "ADP")
            pobjs = [e for n in nouns for e in self.entities_of(n)]
            if any(self.is_reciprocal(n) for n in nouns) and subjects:
                # "two buses next to each other" → ( bus , next to , bus ); "a cat and a dog look at each other"
                self.reciprocal_relation(subjects, (words if is_copula else verb_words + words),
                                         prep if is_copula else f"{verb_lemma} {prep}", v, negated)
                made = True
                continue
            if not pobjs and not nouns and self.is_stranded(words[-1]):
                subjects, pobjs = self.stranded_object(v, subjects)
            if not pobjs and not objs and any(self.names_nothing(n) for n in nouns):
                # "talks to no one": denied, with no object
                self.relation(subjects, verb_words + words, [], lemma=prep if is_copula else f"{verb_lemma} {prep}",
                              verb=v, negated=True)
                made = True
                continue
            if not pobjs or not subjects:
                continue
            if is_copula:
                self.relation(subjects, words, pobjs, lemma=prep, verb=v, negated=negated)
            elif objs and prep not in INSTRUMENT_PREPOSITIONS:
                # "holding a knife in the kitchen": the object is where FACTUAL puts it
                self.relation(objs, words, pobjs, lemma=prep, verb=v, negated=negated)
            else:
                self.relation(subjects, verb_words + words, pobjs, lemma=f"{verb_lemma} {prep}", verb=v,
                              negated=negated)
            made = True
        return made

    def reciprocal_relation(self, subjects: list[int], words: list[int], lemma: str, verb: Optional[int],
                            negated: bool) -> None:
        """"each other": every ordered pair of distinct subjects ("a silver car and a red car pass each
        other" → both directions); one plural subject relates to itself ("two cars pass each other"
        → ( car , pass , car ), see :meth:`reciprocals`)."""
        if len(subjects) == 1:
            self.relation(subjects, words, subjects, lemma=lemma, verb=verb, negated=negated)
            return
        for a in subjects:
            for b in subjects:
                if a != b:
                    self.relation([a], words, [b], lemma=lemma, verb=verb, negated=negated)

    def place_left_of(self, v: int) -> None:
        subjects = self.subjects_of_verb(v)
        for p in self.kids(v, "prep"):
            if self.low(p) == "of":
                objs = [e for n in self.kids(p, "pobj") for e in self.entities_of(n)]
                self.relation(subjects, [v, p], objs, lemma="left of", verb=v, negated=self.is_denied(v))

    def idiom_words(self, v: int, lemma: str) -> list[int]:
        """The words of an idiom after verb ``v`` ("to a halt" in "comes to a halt"), or []."""
        for p in self.kids(v, "prep"):
            for n in self.kids(p, "pobj"):
                if self.t[n].lemma.lower() in IDIOMS.get((lemma, self.low(p)), ()):
                    return [p] + [k for k in self.kids(n, "det")] + [n]
        return []

    def is_idiom_noun(self, i: int) -> bool:
        tok = self.t[i]
        if tok.label != "pobj" or tok.head == i:
            return False
        v = self.t[tok.head].head
        return self.t[v].pos in VERB_POS and i in self.idiom_words(v, self.verb_lemma(v))

    def points_back(self, v: int) -> bool:
        """"the pole has a flag on it": the object's own preposition back to the subject says it all."""
        for o in self.kids(v, "dobj"):
            for p in self.kids(o, "prep") + self.kids(v, "prep"):
                if any(self.low(k) in ("it", "them") for k in self.kids(p, "pobj")):
                    return True
        return False

    def adverbial_prepositions(self, v: int) -> list[int]:
        """A preposition that ends an object-less main clause with nothing of its own ("a car drives by"):
        a particle of the verb, not a stranded one waiting for a fronted object ("the table the plates are
        on": a relative clause, or two subjects)."""
        if self.t[v].label not in ("ROOT", "root", "conj") or len(self.kids(v, "nsubj", "nsubjpass")) > 1 \
                or self.kids(v, "dobj"):   # "has a helmet on": the verb has its object
            return []
        return [p for p in self.kids(v, "prep") if p > v and not self.kids(p) and self.is_stranded(p)]

    def is_stranded(self, p: int) -> bool:
        """A preposition with nothing after it but punctuation ("the table the plates are on")."""
        return all(self.t[k].pos in ("PUNCT", "SPACE") for k in range(p + 1, len(self.t)))

    def stranded_object(self, v: int, subjects: list[int]) -> tuple[list[int], list[int]]:
        """(subjects, objects) of a verb whose preposition is stranded at the end: the object is
        the noun the clause modifies ("the tunnel [the train comes from]") or the fronted noun
        ("blue table the plates are on")."""
        t = self.t
        if t[v].label == "relcl" and t[v].head != v:
            return subjects, self.entities_of(t[v].head)
        subject_tokens = sorted(self.kids(v, "nsubj", "nsubjpass"))
        if len(subject_tokens) >= 2:
            fronted = self.entities_of(subject_tokens[0])
            rest = [e for s_ in subject_tokens[1:] for e in self.entities_of(s_)]
            return rest, fronted
        first = next((j for j in sorted(self.obj_node) if j < v and j not in subject_tokens
                      and self.obj_node[j] not in subjects), None)
        return subjects, ([self.obj_node[first]] if first is not None else [])

    def copular_attribute(self, subjects: list[int], a: int, denied: bool = False) -> None:
        """"the car is (not) red", "the egg is a sculpture": attributes of the subjects; a "not" on
        the copula or on the adjective itself (stanza's UD form) negates them."""
        t = self.t
        for c in self.conjuncts(a):
            if c in self.obj_node or c in self.alias or self.names_nothing(c):
                continue  # "there is a dog": not an attribute
            if t[c].pos in ("ADJ", "VERB", "NUM", "NOUN", "PROPN", "ADV") and t[c].text.isalpha():
                label, lemma, span = self.attribute_phrase(c)
                if c in self.predicate_nouns:
                    mods = [k for k in self.name_modifiers(c) if k == c - 1]
                    label = lemma = " ".join(self.low(w) for w in mods + [c])
                for s in subjects:
                    self.add_attribute(s, label, lemma, span, negated=denied or self.is_denied(c))

    def noun_relations(self) -> None:
        t = self.t
        heads = list(self.obj_node) + [q for q in self.alias if self.t[q].pos in NOUN_POS]
        for head in heads:
            target = self.resolve(head)
            if target is None:
                continue
            subj = self.obj_node[target]
            for prep, words, nouns in self.preps_of(head):
                objs = [e for n in nouns for e in self.entities_of(n)]
                if not objs and any(self.is_reciprocal(n) for n in nouns) and self.t[head].label != "conj":
                    self.reciprocal_relation(self.entities_of(head), words, prep, None, False)  # "two buses next to each other"
                    continue
                if not objs or (head in self.alias and prep == "of"):
                    continue
                if prep == "of":
                    how = self.lex["of_heads"].get(self.low(head)) or (
                        "rev:in" if self.low(head) in CONTAINERS else "rev:have")
                    direction, _, pred = how.partition(":")
                    if direction == "fwd":
                        self.relation([subj], [], objs, lemma=pred)
                    else:
                        self.relation(objs, [], [subj], lemma=pred)
                    continue
                for n in nouns:
                    target = self.resolve(n)
                    if target is None:
                        continue
                    on_part = [(k, o) for k in self.kids(n, "prep") if self.low(k) == "on"
                               for o in self.kids(k, "pobj") if self.low(o) in RELATIONAL_NOUNS
                               and not self.doc.children(o)]
                    if prep == "with" and on_part:  # "a truck with a plant on top" → ( plant , on top of , truck )
                        k, o = on_part[0]
                        self.relation(self.entities_of(n), [k, o], [subj], lemma=f"on {self.low(o)} of")
                        continue
                    self.relation([subj], words, self.entities_of(n), lemma=self.noun_prep_lemma(prep, target))
            for k in self.kids(head, "poss"):
                owners = self.entities_of(k)
                if owners:
                    self.relation(owners, [], [subj], lemma="have")
            for k in self.kids(head, "aux"):  # "the bird has beak" parsed with beak as head
                if t[k].lemma.lower() == "have":
                    owners = [e for s in self.kids(head, "nsubj") for e in self.entities_of(s)]
                    self.relation(owners, [k], [subj], lemma="have")

    def noun_prep_lemma(self, prep: str, noun: int) -> str:
        """How FACTUAL writes "<object> <prep> <noun>": learned ("man in a shirt" → ``wear``), else
        the preposition."""
        return self.lex["prep_objects"].get(f"{prep} {self.low(noun)}") or prep

    def reciprocals(self) -> None:
        """A relation from an object to itself stands for two of its instances: FACTUAL writes
        the singular on both sides and no count ( giraffe , stand next to , giraffe )."""
        subj = {(e.src, e.dst) for e in self.edges if e.kind == "subj_pred"}
        selfish = {e.dst for e in self.edges if e.kind == "pred_obj" and (e.dst, e.src) in subj}
        if not selfish:
            return
        drop = set()
        for o in selfish:
            node = self.nodes[o]
            node.label = node.lemma
            for e in self.edges:
                if e.src == o and e.kind == "obj_attr" and self.nodes[e.dst].lemma == str(node.count):
                    drop.add(e.dst)
        if drop:
            keep = [n for n in self.nodes if n.id not in drop]
            new_id = {n.id: k for k, n in enumerate(keep)}
            self.edges = [TextEdge(new_id[e.src], new_id[e.dst], e.kind) for e in self.edges
                          if e.src in new_id and e.dst in new_id]
            self.nodes = [TextNode(new_id[n.id], n.kind, n.label, n.lemma, n.span, n.count, n.negated) for n in keep]

    def adverbs(self) -> None:
        t = self.t
        for v, rels in self.verb_rel.items():
            advmods = self.kids(v, "advmod")
            # a direction the parser hung on another adverb is the verb's ("moves right gradually")
            advmods += [k for a in advmods for k in self.kids(a, "advmod") if self.low(k) in DIRECTION_WORDS]
            for a in sorted(advmods):
                tok = t[a]
                if tok.pos != "ADV" or tok.tag == "WRB" or tok.text.lower() in SKIP_ADVERBS \
                        or self.kids(a, "prep") or not tok.text.isalpha():
                    continue
                node = self.add_node("pred_attribute", tok.text.lower(), tok.lemma.lower(), (tok.start, tok.end))
                self.add_edge(rels[0], node, "pred_adv")


#: Verbs of motion, appearance and gesture that video captions use intransitively: an "-s" form of
#: one may be the verb the tagger read as a plural noun ("the purple square vanishes").
EVENT_VERBS = {
    "vanish", "disappear", "appear", "move", "slide", "glide", "travel", "approach", "stop", "start",
    "drift", "retreat", "head", "pop", "wave", "squat", "splash", "jump", "run", "walk", "turn", "spin",
    "roll", "fall", "rise", "bounce", "swing", "shake", "nod", "smile", "laugh", "dance", "sing", "talk",
    "speak", "point", "climb", "swim", "dive", "kick", "throw", "catch", "hit", "sit", "stand", "lean",
    "crawl", "hop", "fly", "float", "sink", "shrink", "grow", "flip", "twirl", "stretch", "bend", "kneel",
    "enter", "exit", "leave", "arrive", "return", "pass", "cross", "rotate", "shift", "descend", "ascend",
    "emerge", "follow", "chase", "flee", "escape", "wait", "pause", "continue", "begin", "finish",
}
#: Prepositions of the means or company of an action: they stay with the verb's subject even after
#: an object ("cuts the vegetables with a sharp knife" → ( chef , cut with , knife )).
INSTRUMENT_PREPOSITIONS = {"with", "using"}
#: Position words before a noun are never dropped ("the middle bottle" → ( bottle , is , middle )); those the
#: lexicon keeps in the name stay there ("front wheel").
POSITION_WORDS = {"middle", "left", "right", "front", "back", "top", "bottom", "center", "centre", "first",
                  "second", "third", "last", "upper", "lower", "rear", "inner", "outer", "leftmost", "rightmost"}
#: Clothing: after a passive's agent, "in a red sweater" describes the agent, not the action.
CLOTHING = {"shirt", "t-shirt", "sweater", "jacket", "coat", "dress", "skirt", "hoodie", "vest", "costume",
            "robe", "gown", "sweatshirt", "top", "blouse", "cardigan", "scarf", "uniform", "suit", "jeans",
            "pants", "shorts", "trousers", "hat", "cap", "helmet", "outfit", "tuxedo", "bikini", "swimsuit",
            "wetsuit", "leotard", "apron", "overalls", "jersey", "tank", "beanie", "boots", "sneakers"}
#: Prepositions that can be left at the end of a clause ("the water the bird is standing on"), unlike
#: particles ("then they stand up").
STRANDABLE = {"on", "in", "at", "under", "with", "from", "to", "into", "onto", "behind", "inside", "near", "by",
              "of", "for", "against", "beside", "underneath", "atop", "upon"}
#: Prepositions of a path, which a noun phrase rarely takes but a verb of motion does.
MOTION_PREPOSITIONS = {"toward", "towards", "into", "onto", "across", "through", "past"}
#: Words that open a subordinate clause the parser may read as a preposition ("before the circle vanishes").
CLAUSE_OPENERS = {"before", "after", "while", "until", "when", "as", "since", "once", "then"}


def _verb_form_lemma(word: str, verbs: dict[str, int], plural_objects: set[str]) -> Optional[str]:
    """The verb lemma of a 3rd-person "-s" form ("vanishes" → "vanish"), or None: not a known verb,
    or a word the FACTUAL annotators write as a plural object ("leaves", "waves")."""
    if not word.endswith("s") or word in plural_objects or len(word) < 4:
        return None
    options = [word[:-1], word[:-2]] + ([word[:-3] + "y"] if word.endswith("ies") else [])
    known = [o for o in options if o in EVENT_VERBS or verbs.get(o, 0) >= 5]
    return known[0] if known else None


def repair_verb_forms(doc: ParsedDoc, lex: dict) -> ParsedDoc:
    """``doc`` with 3rd-person verbs the tagger read as plural nouns made verbs again.

    Small models read "Det Adj Noun Verb-s" as one noun phrase ("The purple
    square vanishes" → a noun "vanishes"). A plural-noun token whose word is
    the "-s" form of a known verb, and not a word FACTUAL's annotators write
    as an object, becomes the clause's verb, the noun right before it (with
    the words before that) its subject, when

    * it heads a sentence with no verb at all ("The yellow square moves right");
    * it is the apposition of a noun with a relative clause, after a comma
      ("A person, who is not smiling, waves at the camera");
    * it is the object of a clause opener ("… before the blue circle vanishes");
    * it is the subject of "left", which is then the direction ("slides left");
    * it is a bare conjunct ("and") of a 3rd-person verb or of that verb's direct object, and takes
      that verb's subject ("grabs the handle and positions himself", "brushes her hair and smiles").
    """
    toks = list(doc.tokens)
    fixed = ParsedDoc(doc.text, toks)
    plural_objects = lex["plural_objects"]
    for i, t in enumerate(doc.tokens):
        if i == 0:
            continue
        kids = fixed.children(i)
        if t.pos == "VERB" and t.tag == "VBZ" and not any(toks[k].label in ("nsubj", "nsubjpass", "expl") for k in kids) \
                and any(toks[k].label == "det" and k < i for k in kids) and t.text.lower() not in plural_objects:
            subject = _subject_before(fixed, i)  # "The orange square moves down": the verb took the article
            if subject is not None:
                _make_verb(toks, fixed, i, t.lemma, t.label, t.head, subject)
        elif t.pos == "VERB" and t.label == "pobj" and toks[t.head].text.lower() in CLAUSE_OPENERS \
                and toks[t.head].head != t.head:
            _make_verb(toks, fixed, i, t.lemma, "advcl", toks[t.head].head, None)  # "before the triangle vanishes"
        elif t.pos in NOUN_POS and t.tag in ("NNS", "NNPS"):
            reading = _verb_reading(toks, fixed, i, lex) or _coordinated_verb(toks, fixed, i, lex)
            if reading is not None:
                _make_verb(toks, fixed, i, *reading)
    _repair_attachments(toks, fixed)
    return fixed


def _verb_reading(toks: list, doc: ParsedDoc, i: int, lex: dict) -> Optional[tuple[str, str, int, int]]:
    """(lemma, label, governor, subject) when plural noun ``i`` is a verb (see :func:`repair_verb_forms`)."""
    t = toks[i]
    lemma = _verb_form_lemma(t.text.lower(), lex["verbs"], lex["plural_objects"])
    # after "a person, who …," a plural noun can only be the verb, even one FACTUAL writes as a noun
    lemma_any = lemma or _verb_form_lemma(t.text.lower(), lex["verbs"], set())
    if lemma_any is None:
        return None
    head, kids = toks[t.head], doc.children(i)
    if t.label == "root" and (not any(k.pos in VERB_POS and k.label != "amod" and not _is_direction(toks, k.i, i)
                                      for k in toks if k.sent == t.sent)
                              or any(toks[k].label == "conj" and toks[k].pos == "VERB" for k in kids)):
        # a sentence with no verb, or whose other verb is coordinated with it ("… passes and then … stops")
        subject, label, governor = _subject_before(doc, i), "root", i
        if lemma is None and any(toks[k].text.lower() in MOTION_PREPOSITIONS for k in kids):
            lemma = lemma_any  # "the orange square heads toward the triangle": a plural noun goes nowhere
    elif t.label == "appos" and toks[i - 1].pos == "PUNCT" and any(
            toks[k].label in ("relcl", "acl") for k in doc.children(t.head)):
        subject, label, governor = t.head, "root" if head.head == head.i else head.label, head.head
        lemma = lemma_any
    elif t.label == "pobj" and head.text.lower() in CLAUSE_OPENERS and head.head != head.i:
        subject, label, governor = _subject_before(doc, i), "advcl", head.head
    elif t.label == "nsubj" and head.text.lower() in ("left", "right") and not any(
            toks[k].label == "dobj" for k in doc.children(head.i)):
        subject, label, governor = _subject_before(doc, i), "root", i  # "moves right, then …"
    else:
        return None
    return None if subject is None or lemma is None else (lemma, label, governor, subject)


def _coordinated_verb(toks: list, doc: ParsedDoc, i: int, lex: dict) -> Optional[tuple[str, str, int, None]]:
    """(lemma, "conj", verb, None) when plural noun ``i`` is a verb coordinated with a 3rd-person verb
    (see :func:`repair_verb_forms`): a bare conjunct (no article, possessive, number or adjective) of that
    verb or of its direct object, after an "and"/"or"/"then"; a pronoun the parser hung on the object
    after it ("positions himself") becomes its object."""
    t, head = toks[i], toks[toks[i].head]
    lemma = _verb_form_lemma(t.text.lower(), lex["verbs"], lex["plural_objects"])
    if lemma is None or t.label != "conj":
        return None
    verb = head if head.pos in VERB_POS else toks[head.head] if head.label == "dobj" else None
    if verb is None or verb.tag != "VBZ" or any(
            toks[k].label in ("det", "poss", "nummod", "amod", "compound") for k in doc.children(i)):
        return None
    if not any(toks[k].label == "cc" and head.i < k < i for k in doc.children(head.i)):
        return None
    after = i + 1
    if after < len(toks) and toks[after].pos == "PRON" and toks[after].head == head.i \
            and toks[after].label in ("appos", "dobj", "conj"):
        pronoun = toks[after] = copy(toks[after])
        pronoun.head, pronoun.label = i, "dobj"
        doc.invalidate()
    return lemma, "conj", verb.i, None


def _repair_attachments(toks: list, doc: ParsedDoc) -> None:
    """Three attachments to the verb: a fronted adverb hung on the subject ("Slowly, the circle
    moves"), a compound that is the subject ("The green circle glides up"), and "left" read as
    "leave" after a verb of motion ("is moving left rapidly")."""
    for i, t in enumerate(toks):
        head = toks[t.head]
        if t.pos == "ADV" and t.label == "advmod" and t.head > i and head.label in ("nsubj", "nsubjpass") \
                and head.pos in NOUN_POS and i + 1 < len(toks) and toks[i + 1].text == ",":
            adverb = toks[i] = copy(t)
            adverb.head = head.head
            doc.invalidate()
            continue
        if t.pos != "VERB" or i == 0:
            continue
        kids = doc.children(i)
        if t.tag in ("VBZ", "VBD", "VBP") and not any(toks[k].label in ("nsubj", "nsubjpass", "expl") for k in kids) \
                and toks[i - 1].head == i and toks[i - 1].label == "compound" and toks[i - 1].pos in NOUN_POS:
            subj = toks[i - 1] = copy(toks[i - 1])
            subj.label = "nsubj"
            for k in kids:
                if k < i - 1:
                    toks[k] = copy(toks[k])
                    toks[k].head = i - 1
            doc.invalidate()
        elif t.text.lower() == "left" and t.label in ("advcl", "xcomp", "dep", "conj", "acl", "oprd") \
                and toks[t.head].pos == "VERB" and not any(
                    toks[k].label in ("nsubj", "nsubjpass", "dobj", "prep", "aux", "auxpass") for k in kids):
            left = toks[i] = copy(t)
            left.pos, left.tag, left.lemma, left.label = "ADV", "RB", "left", "advmod"
            for k in kids:
                toks[k] = copy(toks[k])
                toks[k].head = t.head
            doc.invalidate()


def _is_direction(toks: list, k: int, verb: int) -> bool:
    """"left"/"right" hung on verb candidate ``verb`` ("moves left gradually"): a direction, not a verb."""
    return toks[k].text.lower() in ("left", "right") and toks[k].head == verb


def _subject_before(doc: ParsedDoc, i: int) -> Optional[int]:
    """The noun right before verb candidate ``i`` that the parser hung on it, or None."""
    s = doc.tokens[i - 1]
    if s.head != i or s.label not in ("amod", "compound", "nmod", "npadvmod", "dep", "nsubj") \
            or not s.text.isalpha() or s.text.lower() in DETERMINER_WORDS:
        return None
    if s.pos not in NOUN_POS and (s.pos != "ADJ" or s.text.lower() in ATTRIBUTE_NOUNS or s.text.lower().endswith(
            ("ful", "ous", "ive", "able", "al", "ic", "ed", "ing", "y", "ish", "less"))):
        return None
    return i - 1


def _make_verb(toks: list, doc: ParsedDoc, i: int, lemma: str, label: str, governor: int,
               subject: Optional[int]) -> None:
    """Token ``i`` becomes a VBZ verb (``label`` under ``governor``; a root heads itself) with
    ``subject`` as its ``nsubj``. Its dependents before the subject move to the subject; what it
    hung on becomes its dependent: "left" its direction (``advmod``), a clause opener its ``mark``."""
    def own(k: int):
        toks[k] = copy(toks[k])
        return toks[k]

    old = doc.tokens[i]
    verb = own(i)
    verb.pos, verb.tag, verb.lemma, verb.label = "VERB", "VBZ", lemma, label
    verb.head = i if label == "root" else governor
    if subject is not None:
        subj = own(subject)
        subj.pos, subj.tag, subj.label, subj.head = "NOUN", "NNS" if subj.tag == "NNS" else "NN", "nsubj", i
    for k in doc.children(i):
        if subject is not None and k < subject:
            own(k).head = subject
        elif _is_direction(toks, k, i):  # "moves left gradually"
            left = own(k)
            left.pos, left.tag, left.lemma, left.label = "ADV", "RB", left.text.lower(), "advmod"
            for c in doc.children(k):
                own(c).head = i
    if old.label == "nsubj":  # "slides left": "left" is the direction, its dependents the verb's
        left = own(old.head)
        left.pos, left.tag, left.lemma, left.label, left.head = "ADV", "RB", left.text.lower(), "advmod", i
        for k in doc.children(old.head):
            if k != i:
                own(k).head = i
    elif old.label == "pobj":  # "before the circle vanishes": the opener marks the clause
        mark = own(old.head)
        mark.pos, mark.label, mark.head = "SCONJ", "mark", i
    doc.invalidate()


def repair(doc: ParsedDoc, verbs: dict[str, int]) -> ParsedDoc:
    """A copy of ``doc`` with three tagging slips of small models on caption fragments undone.

    * a "verb" with an article ("the side windows", "an awning") is a noun;
    * a gerund right before its object under a preposition ("on cutting
      board") is a compound of that noun;
    * an "-ing noun" after a noun, with a preposition or object of its own, whose
      stem is a known predicate verb ("zebra grazing on grass") is that verb,
      the noun its subject.
    """
    toks = list(doc.tokens)  # copy-on-write: only repaired tokens are copied
    fixed = ParsedDoc(doc.text, toks)

    def own(i: int):
        if toks[i] is doc.tokens[i]:
            toks[i] = copy(toks[i])
        return toks[i]

    for i in range(len(toks)):
        t = toks[i]
        if t.pos == "VERB":
            kids = fixed.children(i)
            if any(toks[k].label == "det" and toks[k].text.lower() in ("a", "an", "the") for k in kids):
                t = own(i)
                t.pos, t.tag = "NOUN", "NNS" if t.tag == "VBZ" else "NN"
            elif (t.tag == "VBG" and t.label == "pcomp" and len(kids) == 1
                  and kids[0] == i + 1 and toks[kids[0]].label == "dobj"):
                noun, t = own(kids[0]), own(i)
                noun.head, noun.label = t.head, "pobj"
                t.head, t.label, t.pos, t.tag = noun.i, "compound", "NOUN", "NN"
                fixed.invalidate()
        elif (t.pos == "NOUN" and t.tag == "NN" and t.text.lower().endswith("ing") and i > 0
              and toks[i - 1].head == i and toks[i - 1].label == "compound"
              and toks[i - 1].pos in NOUN_POS and _stem_verb(t.text.lower(), verbs) >= 5
              and any(toks[k].label in ("prep", "dobj") for k in fixed.children(i))):
            t = own(i)
            t.pos, t.tag, t.lemma = "VERB", "VBG", _stem_verb_lemma(t.text.lower(), verbs)
            own(i - 1).label = "nsubj"
    fixed.invalidate()
    return fixed


def _stem_verb_lemma(word: str, verbs: dict[str, int]) -> str:
    stem = word[:-3]
    options = [o for o in (stem, stem + "e", stem[:-1]) if o in verbs]
    return max(options, key=lambda o: verbs[o]) if options else stem


def _stem_verb(word: str, verbs: dict[str, int]) -> int:
    return verbs.get(_stem_verb_lemma(word, verbs), 0)


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
    if doc.tokens:
        doc = repair(repair_verb_forms(doc, lexicon()), lexicon()["verbs"])
    b = _Builder(doc)
    if doc.tokens:
        b.find_entities()
        b.collect_attributes()
        b.verb_relations()
        b.noun_relations()
        b.adverbs()
        b.reciprocals()
    return TextSceneGraph(caption_id, doc.text if text is None else text, b.nodes, b.edges, start, end)
