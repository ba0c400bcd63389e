"""Analyses: pure functions on numpy arrays (no database, no settings; torch only in the streamed probe).

- ``clustering``: FAISS K-means on every point, the K grid.
- ``comembership``: P(same cluster in B | same in A) from contingency tables, ARI/NMI/FM, curves over K.
- ``pairs``: closest pairs, close-in-A/distant-in-B pairs (cluster and rank definitions), neighbourhood agreement.
- ``projection``: t-SNE (openTSNE), UMAP, PCA, Procrustes alignment of two maps.
- ``probes``: linear probes with validation-chosen L2 strength and Wilson intervals, k-NN accuracy.
- ``similarity``: chunked linear CKA (biased and debiased), CKA matrices, mutual k-NN alignment.
- ``raster``: datashader rasters of 2-D maps with too many points for a browser scatter.

Embedding matrices whose float32 copy would exceed ``arrays.IN_MEMORY_MAX`` (a memory-mapped set of a
million images) are read in chunks or through a bounded working copy (``arrays.working_copy``, within
``arrays.working_copy_budget``): K-means on a float32 copy of one space (streamed above the budget), IVF
neighbours with measured recall, streamed PCA, L-BFGS probes on a standardised copy or in chunks
(``probes_stream``), chunked CKA. ``knn``: their approximate k-NN graphs, through an
index built and tuned beforehand (an embedding set's stored index: ``PrebuiltIndex``) or one built on the spot.

Submodules are imported on demand (``from featscope.analysis.pairs import closest_pairs``), so
using one analysis does not pay for importing UMAP's compiler.
"""
