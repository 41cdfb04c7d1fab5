"""Objects -> emotion networks (paper §3.5): the average GloVe vector of an image's objects through one
linear layer, or its relation phrases word by word through an RNN / LSTM; both end in a softmax over
the 7 emotions."""

from __future__ import annotations

import torch
from torch import nn

EMOTION_OUTPUTS = 7
FAMILIES = ("fc", "rnn", "lstm", "lstm_dropout")


# --- Models --------------------------------------------------------------------------------------------
class ObjectFC(nn.Module):
    """Average GloVe vector of the objects -> linear -> softmax."""

    def __init__(self, dim: int = 50):
        super().__init__()
        self.fc = nn.Linear(dim, EMOTION_OUTPUTS)

    def forward(self, mean_vector: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(mean_vector), dim=1)


class PhraseRNN(nn.Module):
    """Token ids (0 = padding) -> frozen GloVe rows -> RNN / LSTM -> last hidden state -> softmax."""

    def __init__(self, embedding: torch.Tensor, family: str = "lstm", hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        if family not in FAMILIES[1:]:
            raise ValueError(f"family {family!r}: choose one of {', '.join(FAMILIES[1:])}")
        self.embed = nn.Embedding.from_pretrained(embedding, freeze=True, padding_idx=0)
        cell = nn.RNN if family == "rnn" else nn.LSTM
        layers = 2 if family == "lstm_dropout" else 1
        self.rnn = cell(embedding.shape[1], hidden, num_layers=layers, batch_first=True,
                        dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout if family == "lstm_dropout" else 0.0)
        self.fc = nn.Linear(hidden, EMOTION_OUTPUTS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Padding comes after the words, so the output at the last word equals the final state of a
        # packed run; gathering it (rather than packing) keeps the model exportable with torch.export.
        last_word = ((tokens != 0).sum(dim=1) - 1).clamp(min=0)
        outputs, _ = self.rnn(self.embed(tokens))
        last = outputs[torch.arange(len(tokens), device=tokens.device), last_word]
        return torch.softmax(self.fc(self.dropout(last)), dim=1)


# --- Inputs --------------------------------------------------------------------------------------------


def build_object_model(family: str, dim: int, embedding: torch.Tensor | None, hidden: int,
                       dropout: float) -> nn.Module:
    return ObjectFC(dim) if family == "fc" else PhraseRNN(embedding, family, hidden=hidden, dropout=dropout)


def rebuild_object_model(family: str, dim: int, options: dict) -> nn.Module:
    """The untrained model of a card (its saved weights bring the embedding rows)."""
    embedding = torch.zeros(len(options["vocabulary"]) + 1, dim)
    return build_object_model(family, dim, embedding, options["hidden"], options["dropout"])
