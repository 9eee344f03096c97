"""
The paper's analyses (§4.2), run on a dataset, a config or result files rather than during
training: anchor coverage and fitting, crowdedness (Table 2, Fig. 5), aspect ratio (Fig. 7, Fig. 8)
and matching confidence (Fig. 6). The evaluators used during training are in
:mod:`ltm_d2.evaluation`.
"""
