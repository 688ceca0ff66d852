"""How the federation combines LoRA factors (`[lora].mode`), and why each mode is exact or not.

A LoRA layer adds scaling * B @ A to a frozen weight. Institutions train (A_i, B_i); the
federation wants the weighted mean of their updates, sum_i w_i B_i A_i / W.

- fedavg: A and B are averaged element by element (`fedpeft.common.adapter.state` form,
  unchanged). mean(B_i) @ mean(A_i) is not mean(B_i @ A_i), so the aggregate is inexact,
  and every institution must share one rank.
- ffa (FFA-LoRA): every lora_A is frozen to a matrix derived from `lora.frozen_a_seed` and the
  layer's name (`frozen_a`), identical on every institution and on the server, so it never
  travels. Only B (and heads) are trained and sent: half the LoRA bytes, and averaging B is
  exact, mean(B_i) @ A = mean(B_i @ A). With heterogeneous ranks (`ranks`) institution i uses
  the first r_i rows of A and alpha * r_i / R, so every institution scales by alpha / R; its
  B is zero-padded to R columns when sent and cut to r_i when received. The updates keep the
  federation's shapes (so secure aggregation still works) and the padded sum is exact.
- stacking (FLoRA): each institution sends its own A_i and B_i (scaling folded in); the server
  concatenates them onto the global pair, which then represents the accumulated update
  exactly for any ranks (`stacking`). Institutions apply the global update to their base
  weights and train a fresh LoRA each round (`stacked`). The server sees every institution's
  own adapter, so secure aggregation and differential privacy are refused with it.

`modes.exchange_for` picks the learner-side behaviour (`exchange`, `ffa`, `stacked`).
"""
