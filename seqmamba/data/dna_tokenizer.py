"""Character tokenizer for DNA and reverse complement, on strings and on token ids.

Vocabulary (8 ids, a multiple of 8 so no padding of the embedding is needed)::

    0 [PAD]   1 [BOS]   2 [EOS]   3 A   4 C   5 G   6 T   7 N

Soft-masked (lowercase) bases, which RepeatMasker-annotated assemblies such as hg38 use for
repeats, encode as their uppercase base; ``encode(..., return_soft_mask=True)`` also returns the
lowercase positions. IUPAC ambiguity codes (R Y S W K M B D H V) encode as N and are counted;
any other character is an error naming its position. Decoding gives uppercase ACGTN; specials
decode to nothing unless ``keep_specials``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

PAD, BOS, EOS = 0, 1, 2
A, C, G, T, N = 3, 4, 5, 6, 7
SPECIALS = ("[PAD]", "[BOS]", "[EOS]")
BASES = "ACGTN"
VOCAB_SIZE = 8
IUPAC_AMBIGUOUS = "RYSWKMBDHVU"  # U (RNA) is counted as ambiguous too: a DNA model has no U

# byte -> token id; 255 = not accepted
_ENCODE = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _ENCODE[ord(_b)] = A + _i
    _ENCODE[ord(_b.lower())] = A + _i
for _b in IUPAC_AMBIGUOUS:
    _ENCODE[ord(_b)] = N
    _ENCODE[ord(_b.lower())] = N
_IS_AMBIGUOUS = np.zeros(256, dtype=bool)
for _b in IUPAC_AMBIGUOUS:
    _IS_AMBIGUOUS[ord(_b)] = _IS_AMBIGUOUS[ord(_b.lower())] = True

# token id -> complementary token id (specials map to themselves)
_COMPLEMENT_IDS = np.arange(VOCAB_SIZE, dtype=np.int64)
_COMPLEMENT_IDS[[A, C, G, T, N]] = [T, G, C, A, N]
_COMPLEMENT_TABLE = str.maketrans("ACGTNacgtnRYSWKMBDHVryswkmbdhv", "TGCANtgcanYRSWMKVHDByrswmkvhdb")


class DNATokenizer:
    """Bases <-> ids (see the module docstring). Stateless; ``vocab_size`` = 8."""

    vocab_size = VOCAB_SIZE
    pad_id, bos_id, eos_id, n_id = PAD, BOS, EOS, N

    def encode(self, seq: Union[str, bytes], return_soft_mask: bool = False, where: str = "sequence"
               ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """DNA text -> uint8 ids (numpy). ``where`` names the source in the error for a bad character."""
        raw = np.frombuffer(seq.encode("ascii", errors="replace") if isinstance(seq, str) else seq,
                            dtype=np.uint8)
        ids = _ENCODE[raw]
        bad = np.flatnonzero(ids == 255)
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"{where}: character {chr(raw[pos])!r} at offset {pos} is not DNA "
                             f"(expected A C G T N, IUPAC codes or their lowercase)")
        if return_soft_mask:
            return ids, (raw >= ord("a"))
        return ids

    def count_ambiguous(self, seq: Union[str, bytes]) -> int:
        raw = np.frombuffer(seq.encode("ascii") if isinstance(seq, str) else seq, dtype=np.uint8)
        return int(_IS_AMBIGUOUS[raw].sum())

    def encode_tensor(self, seq: Union[str, bytes], where: str = "sequence") -> torch.Tensor:
        return torch.from_numpy(self.encode(seq, where=where).astype(np.int64))

    def decode(self, ids: Union[Sequence[int], np.ndarray, torch.Tensor], keep_specials: bool = False) -> str:
        """Ids -> uppercase ACGTN text; ids outside the vocabulary raise."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        out: List[str] = []
        for t in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if A <= t <= N:
                out.append(BASES[t - A])
            elif 0 <= t < A:
                if keep_specials:
                    out.append(SPECIALS[t])
            else:
                raise ValueError(f"token id {t} is outside the DNA vocabulary [0, {VOCAB_SIZE})")
        return "".join(out)


def reverse_complement(seq: str) -> str:
    """Reverse complement of DNA text; case (soft-masking) and IUPAC codes are kept."""
    return seq.translate(_COMPLEMENT_TABLE)[::-1]


def reverse_complement_ids(ids: Union[np.ndarray, torch.Tensor]) -> Union[np.ndarray, torch.Tensor]:
    """Reverse complement along the last axis of token ids (numpy or torch); specials stay in place
    as values (a [BOS] at the front moves to the back: apply it to bases only)."""
    if isinstance(ids, torch.Tensor):
        table = torch.as_tensor(_COMPLEMENT_IDS, device=ids.device)
        return table[ids.long()].flip(-1).to(ids.dtype)
    return _COMPLEMENT_IDS[np.asarray(ids, dtype=np.int64)][..., ::-1].astype(np.asarray(ids).dtype)
