# twistd -ny msrp.tac
# Settings come from the TOML file named by the MSRP_CONFIG environment
# variable (same keys as `twistd msrp --help`, snake_case); without it the
# defaults apply: a relay on msrp:127.0.0.1:2855, management on tcp:127.0.0.1:2856.
from twisted.application import service

from msrp_twisted.allocator import tune_malloc
from msrp_twisted.tap import config_from_environment, make_service

tune_malloc()
application = service.Application("msrp")
# One relay process, or with workers > 1 the parent of that many.
make_service(config_from_environment()).setServiceParent(application)
