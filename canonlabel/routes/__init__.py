"""The HTTP service's routes, one :class:`fastapi.APIRouter` per surface: :mod:`.api`
(classify, labels, stats), :mod:`.curation` (merge, rename, split, undo, for the admin
token) and :mod:`.ui` (the exploration page's JSON). :mod:`.deps` holds what they share;
:func:`canonlabel.server.create_app` puts them together."""
