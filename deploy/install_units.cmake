# Runs at `cmake --install` time (see deploy/CMakeLists.txt). CMAKE_INSTALL_PREFIX here is the
# prefix being installed into (including one given with --prefix); DESTDIR is honoured.
#   FTUNE_UNIT_TEMPLATES, FTUNE_ENV_EXAMPLES   source files
#   FTUNE_UNIT_DIR, FTUNE_BINDIR, FTUNE_SYSCONFDIR, FTUNE_DOCDIR   relative to the prefix or absolute

function(ftune_full_path rel out)
  if(IS_ABSOLUTE "${rel}")
    set(${out} "${rel}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${rel}" PARENT_SCOPE)
  endif()
endfunction()

# The GNUInstallDirs rule for etc: /usr -> /etc, /opt/X -> /etc/opt/X, else PREFIX/etc.
if(IS_ABSOLUTE "${FTUNE_SYSCONFDIR}")
  set(sysconfdir "${FTUNE_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(sysconfdir "/${FTUNE_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/opt/")
  set(sysconfdir "/${FTUNE_SYSCONFDIR}${CMAKE_INSTALL_PREFIX}")
else()
  set(sysconfdir "${CMAKE_INSTALL_PREFIX}/${FTUNE_SYSCONFDIR}")
endif()

ftune_full_path("${FTUNE_BINDIR}" FTUNE_BINDIR)
ftune_full_path("${FTUNE_DOCDIR}" FTUNE_DOCDIR)
ftune_full_path("${FTUNE_UNIT_DIR}" unitdir)
set(FTUNE_SYSCONFDIR "${sysconfdir}")

foreach(template IN LISTS FTUNE_UNIT_TEMPLATES)
  get_filename_component(name "${template}" NAME)
  string(REGEX REPLACE "\\.in$" "" name "${name}")
  set(dest "$ENV{DESTDIR}${unitdir}/${name}")
  message(STATUS "Installing: ${dest}")
  configure_file("${template}" "${dest}" @ONLY)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${dest}")
endforeach()

# Live configs belong to the admin once installed: an upgrade must not overwrite them.
foreach(example IN LISTS FTUNE_ENV_EXAMPLES)
  get_filename_component(name "${example}" NAME)
  set(dest "$ENV{DESTDIR}${sysconfdir}/ftune/${name}")
  if(EXISTS "${dest}")
    message(STATUS "Keeping: ${dest} (the new example is in share/ftune/examples)")
  else()
    # file(INSTALL) adds DESTDIR itself, reports the file and lists it in install_manifest.txt.
    file(INSTALL "${example}" DESTINATION "${sysconfdir}/ftune"
         FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
  endif()
endforeach()
