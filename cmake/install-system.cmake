# Run by `cmake --install` (see install.cmake): the files whose place, or
# whose content, depends on the prefix given at install time.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(FERRY_SYSCONF_DIR)
  set(etc "${FERRY_SYSCONF_DIR}")
elseif(prefix STREQUAL "/usr")
  set(etc /etc)
else()
  set(etc "${prefix}/etc")
endif()
if(FERRY_SYSTEMD_UNIT_DIR)
  set(unitdir "${FERRY_SYSTEMD_UNIT_DIR}")
elseif(prefix STREQUAL "/usr")
  set(unitdir "${FERRY_USR_UNIT_DIR}")
else()
  set(unitdir "${prefix}/lib/systemd/system")
endif()

# One unit source, two units: ferryd.service reads ETC/ferry/ferryd.conf,
# the template ferryd@NAME.service reads ETC/ferry/NAME.conf.
set(FERRY_SBINDIR "${prefix}/sbin")
set(FERRY_UNIT_CONF "${etc}/ferry/ferryd.conf")
set(FERRY_UNIT_HEAD "ferryd serving the pool that ${FERRY_UNIT_CONF} names.")
configure_file("${FERRY_SOURCE_DIR}/contrib/systemd/ferryd.service.in"
               "${FERRY_BINARY_DIR}/contrib/systemd/ferryd.service" @ONLY)
set(FERRY_UNIT_CONF "${etc}/ferry/%i.conf")
set(FERRY_UNIT_HEAD "One ferryd per configuration file: ferryd@NAME.service serves the pool of ${etc}/ferry/NAME.conf.")
configure_file("${FERRY_SOURCE_DIR}/contrib/systemd/ferryd.service.in"
               "${FERRY_BINARY_DIR}/contrib/systemd/ferryd@.service" @ONLY)
file(INSTALL "${FERRY_BINARY_DIR}/contrib/systemd/ferryd.service"
             "${FERRY_BINARY_DIR}/contrib/systemd/ferryd@.service"
     DESTINATION "${unitdir}" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# The administrator's configuration is never overwritten.  (file(INSTALL)
# adds $DESTDIR itself.)
set(conf "$ENV{DESTDIR}${etc}/ferry/ferryd.conf")
if(EXISTS "${conf}")
  message(STATUS "Kept: ${conf}")
else()
  file(INSTALL "${FERRY_SOURCE_DIR}/contrib/ferryd.conf" DESTINATION "${etc}/ferry"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
