"""The store's flows, by concern: lease, commit, read, admin; confirm is what every
confirmed write shares. :class:`redis_ckpt.core.store_core.StoreCore` gathers them."""
