from aioice import stun as aioice_stun

from sfu.core.ice import ConsentExpired, IceLite, PathSelected
from sfu.wire import stun

LUFRAG, LPWD = "srvu", "server-password-0123456789"
RUFRAG, RPWD = "cliu", "client-password-0123456789"
WIFI = ("192.168.1.20", 50000)
ETH = ("10.0.0.5", 50001)
VPN = ("2001:db8::7", 50002)


def make(now=0.0, **kwargs):
    return IceLite(LUFRAG, LPWD, RUFRAG, RPWD, now=now, **kwargs)


def check(ice, addr, now, *, nominate=False, ufrag=LUFRAG, rufrag=RUFRAG, pwd=LPWD,
          controlling=True):
    _, data = stun.binding_request(
        f"{ufrag}:{rufrag}", pwd, use_candidate=nominate, controlling=controlling
    )
    return ice.receive_binding(data, addr, now)


def run_until(ice, end, step, checks):
    """Advance a fake clock; `checks` is [(addr, nominate)] sent every `step` seconds."""
    now = 0.0
    while now < end:
        for addr, nominate in checks:
            check(ice, addr, now, nominate=nominate)
        t = ice.next_deadline()
        if t is not None and t <= now:
            ice.handle_timer(now)
        now = round(now + step, 6)
    return now


def test_first_valid_check_selects_and_response_is_valid():
    ice = make()
    resp = check(ice, WIFI, 0.1)
    msg = aioice_stun.parse_message(resp)
    assert msg.message_class == aioice_stun.Class.RESPONSE
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == WIFI
    assert msg.check_message_integrity(LPWD.encode())
    assert ice.selected == WIFI
    assert ice.take_events() == [PathSelected(WIFI)]
    assert ice.address_is_known(WIFI) and not ice.address_is_known(ETH)


def test_nomination_moves_path_and_plain_checks_do_not():
    ice = make()
    check(ice, WIFI, 0.0)
    check(ice, ETH, 0.1, nominate=True)
    assert ice.selected == ETH and ice.nominated
    assert ice.take_events() == [PathSelected(WIFI), PathSelected(ETH)]
    # browsers keep checking every pair: the other addresses never take the path
    for i in range(100):
        now = 0.2 + i * 0.5
        assert check(ice, WIFI, now) is not None
        assert check(ice, VPN, now + 0.1) is not None
        check(ice, ETH, now + 0.2)
        if ice.next_deadline() <= now:
            ice.handle_timer(now)
    assert ice.selected == ETH
    assert ice.take_events() == []
    assert ice.address_is_known(VPN)  # known (DTLS from it accepted) but not selected


def test_second_address_checked_but_not_nominated_never_selected():
    ice = make()
    check(ice, ETH, 0.0, nominate=True)
    for i in range(60):
        check(ice, WIFI, i * 0.5)
        check(ice, ETH, i * 0.5)
        ice.handle_timer(i * 0.5)
    assert ice.selected == ETH
    assert [e for e in ice.take_events()] == [PathSelected(ETH)]


def test_consent_expiry():
    ice = make(consent_timeout=20.0)
    check(ice, WIFI, 1.0, nominate=True)
    assert ice.next_deadline() == 21.0
    ice.handle_timer(20.9)
    assert not ice.expired
    ice.handle_timer(21.0)
    assert ice.expired and ice.selected is None
    assert ice.take_events() == [PathSelected(WIFI), ConsentExpired("consent timeout")]
    assert ice.next_deadline() is None
    assert check(ice, WIFI, 22.0) is None and ice.drops["expired"] == 1


def test_connect_timeout():
    ice = make(now=5.0, connect_timeout=20.0)
    assert ice.next_deadline() == 25.0
    ice.handle_timer(24.0)
    assert ice.take_events() == []
    ice.handle_timer(25.0)
    assert ice.take_events() == [ConsentExpired("ice connect timeout")]


def test_failover_when_selected_dies_but_another_is_alive():
    ice = make(consent_timeout=20.0)
    check(ice, WIFI, 0.0, nominate=True)
    check(ice, ETH, 0.0)
    check(ice, VPN, 0.0)
    ice.take_events()
    now = 0.0
    # Wi-Fi goes away at t=5; Ethernet and VPN keep answering, VPN slightly later each round
    while now < 40.0:
        now = round(now + 0.5, 6)
        if now < 5.0:
            check(ice, WIFI, now)
        check(ice, ETH, now)
        check(ice, VPN, now + 0.1)
        if ice.next_deadline() <= now:
            ice.handle_timer(now)
    assert ice.selected == VPN  # the most recently validated alive address
    assert ice.take_events() == [PathSelected(VPN)]
    assert not ice.address_is_known(WIFI)  # its consent lapsed
    assert not ice.expired


def test_restart_keeps_path_until_new_nomination():
    ice = make()
    check(ice, WIFI, 0.0, nominate=True)
    ice.take_events()
    ice.restart("newu", "new-server-password-000000", "newc", "x", now=1.0)
    # old credentials still answered until the peer uses the new ones
    assert check(ice, WIFI, 1.1) is not None
    # new credentials, non-nominating check from another address: path stays
    assert check(ice, ETH, 1.2, ufrag="newu", rufrag="newc", pwd="new-server-password-000000")
    assert ice.selected == WIFI
    # old credentials are no longer accepted
    assert check(ice, WIFI, 1.3) is None and ice.drops["bad-username"] == 1
    check(ice, ETH, 1.4, nominate=True, ufrag="newu", rufrag="newc",
          pwd="new-server-password-000000")
    assert ice.selected == ETH
    assert ice.take_events() == [PathSelected(ETH)]
    assert ice.local_ufrag == "newu"


def test_bad_integrity_and_username_counted():
    ice = make()
    assert check(ice, WIFI, 0.0, pwd="wrong-password-xxxxxxxxxx") is None
    assert check(ice, WIFI, 0.0, ufrag="other") is None
    assert check(ice, WIFI, 0.0, rufrag="other") is None
    assert ice.receive_binding(b"\x16\xfe\xfd" + b"\0" * 30, WIFI, 0.0) is None
    _, data = stun.binding_request(f"{LUFRAG}:{RUFRAG}", LPWD)
    assert ice.receive_binding(data[:-1] + bytes([data[-1] ^ 0xFF]), WIFI, 0.0) is None
    assert ice.drops == {"bad-integrity": 1, "bad-username": 2, "not-stun": 1,
                         "bad-fingerprint": 1}
    assert ice.selected is None and not ice.address_is_known(WIFI)
    assert ice.take_events() == []


def test_role_conflict():
    ice = make()
    resp = check(ice, WIFI, 0.0, controlling=False)
    msg = aioice_stun.parse_message(resp)
    assert msg.message_class == aioice_stun.Class.ERROR
    assert msg.attributes["ERROR-CODE"][0] == 487
    assert msg.check_message_integrity(LPWD.encode())
    assert ice.selected is None and ice.drops["role-conflict"] == 1


def test_ipv6_asyncio_address_tuple():
    ice = make()
    addr = ("2001:db8::9", 40000, 0, 0)
    resp = check(ice, addr, 0.0)
    assert aioice_stun.parse_message(resp).attributes["XOR-MAPPED-ADDRESS"] == addr[:2]
    assert ice.selected == addr
