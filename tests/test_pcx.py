"""PCX (Dreyer et al. 2024): a Gaussian mixture over concept relevance vectors recovers known sub-strategies
and flags what none of them explains."""

import numpy as np
from sklearn.metrics import adjusted_rand_score

from dermsynth.config import schema_defaults
from dermsynth.explain.pcx import MixtureFit, concept_matrix, fit_prototypes, prototype_members, relevance_shares


def mixture_fit(**settings) -> MixtureFit:
    """The schema's `explain.pcx` fit settings changed by `settings`."""
    return MixtureFit.from_section({**schema_defaults("explain.pcx"), **settings})


def clustered_relevances(k=3, per_cluster=60, concepts=16, seed=0):
    """Relevance vectors of k sub-strategies: each puts most relevance on its own 3 concepts."""
    rng = np.random.default_rng(seed)
    vectors, truth = [], []
    for cluster in range(k):
        centre = np.full(concepts, 0.02)
        centre[3 * cluster:3 * cluster + 3] = 1.0
        vectors.append(centre + 0.08 * rng.standard_normal((per_cluster, concepts)))
        truth += [cluster] * per_cluster
    return np.vstack(vectors), np.array(truth)


def test_mixture_recovers_known_clusters_and_flags_a_far_vector_as_novelty():
    relevances, truth = clustered_relevances()
    vectors = relevance_shares(relevances)
    prototypes = fit_prototypes(vectors, mixture_fit(prototypes=None, max_prototypes=6, seed=0))
    assigned, _, novel = prototypes.assign(vectors)
    assert prototypes.count == 3, prototypes.bic          # chosen by BIC
    assert adjusted_rand_score(truth, assigned) >= 0.9
    assert novel.mean() <= 0.06                           # the 5 % quantile threshold on training vectors
    far = np.zeros((1, vectors.shape[1]))
    far[0, -1] = 1.0                                      # all relevance on a concept no strategy uses
    assert prototypes.assign(far)[2][0]


def test_prototype_images_and_concept_matrix_follow_the_clusters():
    relevances, truth = clustered_relevances(seed=1)
    vectors = relevance_shares(relevances)
    prototypes = fit_prototypes(vectors, mixture_fit(prototypes=3, seed=0))
    for rows in prototype_members(prototypes, vectors, 5):
        assert len(set(truth[rows])) == 1                 # the closest images share one strategy
    concepts, percentages = concept_matrix(prototypes, 9)
    assert sorted(concepts) == list(range(9))             # the 9 concepts the strategies use
    for p in range(3):                                    # each prototype concentrates on its own 3
        own = prototypes.mixture.means_[p].argmax() // 3
        rows = [i for i, c in enumerate(concepts) if c // 3 == own]
        assert percentages[rows, p].sum() > 75


def test_relevance_shares_sum_to_one_in_absolute_value():
    shares = relevance_shares(np.array([[2.0, -1.0, 1.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(shares, [[0.5, -0.25, 0.25], [0, 0, 0]])
