"""The registry as the resolver, the tally and the CLI see it: one object composed of parts.

Each part owns one job; :class:`Registry` builds them around one :class:`Namespace` and keeps the
names callers have always used, each bound to the part that does the work:

- :mod:`registry.namespace`: store, settings, clock, parsing, responsibility, authoritative reads
- :mod:`registry.writes`: the write service, the only code that changes identifier data (planned by
  :mod:`registry.write_plan`, published as :mod:`registry.write_events`)
- :mod:`registry.callers`: authentication of callers, read rights, listing handles
- :mod:`registry.templates_service`: template storage, lookup, versioning and checks
- :mod:`registry.onboarding`: promoters and enterprises
- :mod:`registry.auditors`: the bureau's read-only identities
- :mod:`registry.gs1_prefixes`: the enterprises' GS1 company prefixes

- :mod:`registry.secret_rotation`: new secret keys (an enterprise's own rotation, the operator's reset)
- :mod:`registry.bootstrap`: the node's own prefix handle and node values
- :mod:`registry.audit`: the audit log of operator actions
- :mod:`registry.search`: reverse lookup, handles by the values they hold
"""

from __future__ import annotations

from collections.abc import Callable

from registry.admin_values import ADMIN_INDEX, DEFAULT_HANDLE_ADMIN_PERMS, SECKEY_INDEX
from registry.audit import AuditLog
from registry.auditors import Auditor, Auditors
from registry.bootstrap import NodeBootstrap
from registry.callers import Callers, require_node_admin
from registry.gs1_prefixes import Gs1Prefixes
from registry.namespace import Namespace, NodeSettings, wall_clock
from registry.onboarding import Onboarding
from registry.search import ValueSearch
from registry.secret_rotation import SecretRotation
from registry.secretkeys import SecretHasher
from registry.stores.base import HandleStore
from registry.templates_service import TemplateService
from registry.write_events import KeysListener, keys_subscriber
from registry.writes import WriteReport, WriteService

__all__ = [
    "ADMIN_INDEX",
    "DEFAULT_HANDLE_ADMIN_PERMS",
    "SECKEY_INDEX",
    "Auditor",
    "NodeSettings",
    "Registry",
    "WriteReport",
]


class Registry:
    """The node's registry: its parts, and their methods under the names callers use."""

    def __init__(
        self, store: HandleStore, settings: NodeSettings | None = None, *, clock: Callable[[], int] = wall_clock
    ) -> None:
        self.settings = settings or NodeSettings()
        self.ns = ns = Namespace(store, self.settings, clock)
        self.store = store
        self.clock = clock
        self.node_prefix = ns.node_prefix
        self.node_admin_handle = ns.node_admin_handle
        self.hasher = hasher = SecretHasher(self.settings.scrypt_threads, self.settings.scrypt_max_jobs)
        self.templates = TemplateService(ns)
        self.writes = writes = WriteService(ns, hasher, self.templates)
        self.callers = Callers(ns, hasher)
        self.onboarding = Onboarding(ns, hasher, writes)
        self.auditors = Auditors(ns, hasher, writes)
        self.gs1 = Gs1Prefixes(ns, self.onboarding, writes)

        self.secrets = SecretRotation(ns, writes, self.onboarding)
        self.bootstrapper = NodeBootstrap(ns, hasher, writes)
        self.audit = AuditLog(ns)
        self.search = ValueSearch(ns, self.callers)
        self.authenticator = self.callers.authenticator

        # Reading and the namespace.
        self.parse = ns.parse
        self.read_record = ns.read_record
        self.is_responsible = ns.is_responsible
        self.require_responsible = ns.require_responsible
        # Callers and what they may read.
        self.caller_for = self.callers.caller_for
        self.caller_of = self.callers.caller_of
        self.may_read_private = self.callers.may_read_private
        self.list_handles = self.callers.list_handles
        self.handles_from = self.callers.handles_from
        self.find_handles = self.callers.find_handles
        self.require_node_admin = require_node_admin
        # Writes (the single writer; batches through writes.plan_batch / writes.apply) and their events.
        self.subscribe = writes.subscribe
        self.put_handle = writes.put_handle
        self.delete = writes.delete
        # Templates.
        self.template = self.templates.template
        self.check_template = self.templates.check_template
        self.put_template = self.templates.put_template
        self.list_templates = self.templates.list_templates
        # Promoters and enterprises; auditors; the node's own prefix handle.
        self.add_promoter = self.onboarding.add_promoter
        self.find_promoter = self.onboarding.find_promoter
        self.find_enterprise = self.onboarding.find_enterprise
        self.add_enterprise = self.onboarding.add_enterprise
        self.move_enterprise = self.onboarding.move_enterprise
        self.set_enterprise_status = self.onboarding.set_enterprise_status
        self.update_enterprise = self.onboarding.update_enterprise
        self.add_auditor = self.auditors.add_auditor
        self.list_auditors = self.auditors.list_auditors
        self.revoke_auditor = self.auditors.revoke_auditor
        # GS1 company prefixes (GS1 Digital Link resolution).
        self.add_gs1_prefix = self.gs1.add_prefix
        self.list_gs1_prefixes = self.gs1.list_prefixes
        self.remove_gs1_prefix = self.gs1.remove_prefix
        self.gs1_owner = self.gs1.owner

        self.rotate_own_secret = self.secrets.rotate_own_secret
        self.reset_enterprise_secret = self.secrets.reset_enterprise_secret
        self.bootstrap = self.bootstrapper.bootstrap
        self.publish_site = self.bootstrapper.publish_site
        self.set_node_value = self.bootstrapper.set_node_value
        self.reset_admin_secret = self.bootstrapper.reset_admin_secret

    def add_listener(self, listener: KeysListener) -> None:
        """Call ``listener`` with the changed keys after every commit (a cache's ``invalidate``)."""
        self.writes.subscribe(keys_subscriber(listener))

    def close(self) -> None:
        """Stop the scrypt threads (jobs not started yet are dropped)."""
        self.hasher.close()
